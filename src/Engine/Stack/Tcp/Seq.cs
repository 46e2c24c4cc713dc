namespace Emunet.Engine.Stack.Tcp;

/// <summary>
/// Sequence number comparison modulo 2^32 (RFC 9293 §3.4). Guest-supplied values wrap by design: every operation here
/// is deliberately unchecked, and a comparison is only meaningful for numbers less than 2^31 apart.
/// </summary>
internal static class Seq
{
    public static bool Lt(uint a, uint b) => unchecked((int)(a - b)) < 0;
    public static bool Le(uint a, uint b) => unchecked((int)(a - b)) <= 0;
    public static bool Gt(uint a, uint b) => unchecked((int)(a - b)) > 0;
    public static bool Ge(uint a, uint b) => unchecked((int)(a - b)) >= 0;

    /// <summary>b - a as a distance; callers check <see cref="Le"/> first.</summary>
    public static int Diff(uint b, uint a) => unchecked((int)(b - a));

    public static uint Add(uint a, int n) => unchecked(a + (uint)n);

    /// <summary>a &lt;= x &lt; b.</summary>
    public static bool InRange(uint x, uint a, uint b) => Le(a, x) && Lt(x, b);
}
