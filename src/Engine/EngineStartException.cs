namespace Emunet.Engine;

/// <summary>The engine could not start; the message names the cause and the fix.</summary>
public sealed class EngineStartException : Exception
{
    public EngineStartException(string message) : base(message) { }
    public EngineStartException(string message, Exception inner) : base(message, inner) { }
}
