using System.Buffers.Binary;
using System.Net.Sockets;
using Emunet.Engine.Interop;

namespace Emunet.Engine.Devices.VhostUser;

/// <summary>What one <see cref="VhostUserChannel.Read"/> came to.</summary>
internal enum ChannelRead
{
    /// <summary>A whole message: <see cref="VhostUserChannel.Request"/>, <see cref="VhostUserChannel.Payload"/> and <see cref="VhostUserChannel.Fds"/>.</summary>
    Message,
    /// <summary>Part of a message; read again.</summary>
    Incomplete,
    /// <summary>Nothing more to read now.</summary>
    WouldBlock,
    /// <summary>The front-end closed the connection (errno 0) or the read failed.</summary>
    Closed,
    /// <summary>More descriptors came than any request takes (MSG_CTRUNC).</summary>
    TooManyFds,
    /// <summary>A header with another version or a payload over <see cref="VhostUserProtocol.MaxPayload"/>.</summary>
    BadHeader,
}

/// <summary>
/// Theory of operation: the framing of vhost-user.rst "Message specification" over the front-end's socket. A message
/// is a header (u32 request, u32 flags, u32 size) and <c>size</c> bytes of payload, with file descriptors passed as
/// SCM_RIGHTS ancillary data. The channel reads exactly one message at a time (header, then payload), so descriptors
/// passed with a message arrive with it: the kernel never merges data across an SCM_RIGHTS boundary into a read that
/// stops before it. A header is checked as soon as it is whole, before its payload is read. The descriptors belong to
/// the channel until the session takes them (<see cref="TakeFds"/>); the rest are closed (<see cref="CloseFds"/>).
/// One buffer, no allocation. Owner thread only.
/// </summary>
internal sealed class VhostUserChannel
{
    private readonly byte[] _message = GC.AllocateUninitializedArray<byte>(VhostUserProtocol.HeaderSize + VhostUserProtocol.MaxPayload);
    private readonly int[] _fds = new int[LibcVhost.MaxFds];
    private int _length;
    private int _messageLength;
    private int _fdCount;

    public VhostUserRequest Request => (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(_message);

    /// <summary>The header's flags; with <see cref="ChannelRead.BadHeader"/>, the refused ones.</summary>
    public uint Flags => BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(4));

    /// <summary>The header's payload size; with <see cref="ChannelRead.BadHeader"/>, the refused one.</summary>
    public uint Size => BinaryPrimitives.ReadUInt32LittleEndian(_message.AsSpan(8));

    /// <summary>The payload of the message last read whole.</summary>
    public ReadOnlySpan<byte> Payload => _message.AsSpan(VhostUserProtocol.HeaderSize, _messageLength - VhostUserProtocol.HeaderSize);

    /// <summary>The descriptors that came with it and have not been taken or closed.</summary>
    public ReadOnlySpan<int> Fds => _fds.AsSpan(0, _fdCount);

    /// <summary>One read toward the next message on <paramref name="socket"/>; <paramref name="errno"/> is set with <see cref="ChannelRead.Closed"/>.</summary>
    public ChannelRead Read(int socket, out int errno)
    {
        errno = 0;
        int need = _length < VhostUserProtocol.HeaderSize
            ? VhostUserProtocol.HeaderSize - _length
            : VhostUserProtocol.HeaderSize + (int)Size - _length; // Size was checked against MaxPayload
        if (need > 0)
        {
            nint n = LibcVhost.ReceiveWithFds(socket, _message.AsSpan(_length, need), _fds, ref _fdCount, out bool truncated);
            if (n == -Libc.EAGAIN) return ChannelRead.WouldBlock;
            if (n <= 0)
            {
                errno = (int)-n;
                return ChannelRead.Closed;
            }
            if (truncated) return ChannelRead.TooManyFds;
            _length += (int)n;
            if (_length == VhostUserProtocol.HeaderSize && ((Flags & VhostUserProtocol.FlagVersionMask) != VhostUserProtocol.Version || Size > VhostUserProtocol.MaxPayload))
                return ChannelRead.BadHeader;
            if (_length < VhostUserProtocol.HeaderSize || VhostUserProtocol.HeaderSize + (int)Size > _length) return ChannelRead.Incomplete;
        }
        _messageLength = _length;
        _length = 0;
        return ChannelRead.Message;
    }

    /// <summary>Hands the message's descriptors to the caller, who closes them.</summary>
    public ReadOnlySpan<int> TakeFds()
    {
        var fds = Fds;
        _fdCount = 0;
        return fds;
    }

    /// <summary>Closes the descriptors nobody took.</summary>
    public void CloseFds()
    {
        for (int i = 0; i < _fdCount; i++) Libc.close(_fds[i]);
        _fdCount = 0;
    }

    /// <summary>The connection ended: a partial message and its descriptors are dropped.</summary>
    public void Reset()
    {
        _length = 0;
        CloseFds();
    }

    /// <summary>
    /// Sends the reply to <paramref name="request"/> (flags: version and REPLY) with <paramref name="payload"/> of at most
    /// 64 bytes. False when the send failed or was short: a reply is a few bytes on a socket the front-end is waiting
    /// to read, so the session ends.
    /// </summary>
    public static bool Reply(Socket connection, VhostUserRequest request, ReadOnlySpan<byte> payload, out SocketError error)
    {
        Span<byte> buffer = stackalloc byte[VhostUserProtocol.HeaderSize + 64];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)request);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer[4..], VhostUserProtocol.Version | VhostUserProtocol.FlagReply);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer[8..], (uint)payload.Length);
        payload.CopyTo(buffer[VhostUserProtocol.HeaderSize..]);
        int total = VhostUserProtocol.HeaderSize + payload.Length;
        int sent = connection.Send(buffer[..total], SocketFlags.None, out error);
        return error == SocketError.Success && sent == total;
    }
}
