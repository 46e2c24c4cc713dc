using Emunet.Engine.Link;

namespace Emunet.Engine.Devices;

/// <summary>
/// A frame device as the engine owns it: started once, disposed once, described for <c>emunet instances</c>, tapped for
/// capture. <see cref="Stream.StreamDevice"/> and <see cref="VhostUser.VhostUserDevice"/> implement it.
/// </summary>
internal interface IGuestDevice : IFrameDevice, IDisposable
{
    /// <summary>Where frames go; set before <see cref="Start"/>.</summary>
    IFrameHandler? Handler { get; set; }

    /// <summary>Called for every frame in either direction (capture).</summary>
    FrameTap? Tap { get; set; }

    /// <summary>Human-readable endpoint, e.g. <c>stream:unix:/run/emu.sock</c> or <c>vhost-user:/run/emu.sock</c>.</summary>
    string Description { get; }

    /// <summary>Binds and listens. Throws <see cref="EngineStartException"/> naming the cause and the fix.</summary>
    void Start();
}
