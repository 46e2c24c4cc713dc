using Emunet.Fuzz.Targets;
using SharpFuzz;

// emunet-fuzz TARGET: the AFL++ fork server over one target (SharpFuzz). Outside afl-fuzz it runs stdin once, so
// `dotnet Emunet.Fuzz.dll frame < input` replays a saved input and prints any exception with its stack trace.
if (args is ["--write-seeds", var directory])
{
    Emunet.Fuzz.Seeds.Write(directory);
    return 0;
}
if (args.Length != 1 || !FuzzTargets.TryGet(args[0], out var target))
{
    Console.Error.WriteLine($"usage: Emunet.Fuzz TARGET   (one of: {string.Join(", ", FuzzTargets.Names)})");
    Console.Error.WriteLine("       Emunet.Fuzz --write-seeds DIR");
    return 2;
}
var buffer = new MemoryStream();
Fuzzer.Run(stream =>
{
    buffer.SetLength(0);
    stream.CopyTo(buffer);
    target(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
});
return 0;
