using Emunet.Engine.Wire;

namespace Emunet.Engine.Stack;

/// <summary>
/// The stacks of one engine's guest links (one <see cref="NetStack"/> per link, all sharing one flow table). It keeps
/// the links' guests apart: a flow key names the guest address, so no guest may take an address another link's guest
/// is configured with or has announced, or its packets would reach that link's flows. Owner thread only.
/// </summary>
internal sealed class LinkSet
{
    /// <summary>The most links one engine serves (the Android Emulator has two: radio and Wi-Fi).</summary>
    public const int MaxLinks = 8;

    private readonly List<NetStack> _stacks = new(MaxLinks);

    public int Count => _stacks.Count;

    public NetStack this[int link] => _stacks[link];

    public void Add(NetStack stack)
    {
        if (_stacks.Count >= MaxLinks) throw new InvalidOperationException($"An engine serves at most {MaxLinks} guest links.");
        _stacks.Add(stack);
    }

    /// <summary>The stack whose configured guest is <paramref name="guest"/>; null when no link is configured with it.</summary>
    public NetStack? ForGuest(IPv4Address guest)
    {
        foreach (var s in _stacks)
            if (s.ConfiguredGuest == guest) return s;
        return null;
    }

    public bool IsClaimedByOther(NetStack stack, IPv4Address address)
    {
        foreach (var s in _stacks)
            if (!ReferenceEquals(s, stack) && (s.ConfiguredGuest == address || s.GuestAddress == address)) return true;
        return false;
    }
}
