namespace Emunet.Tool;

internal static class Program
{
    private static Task<int> Main(string[] args) => EmunetCli.InvokeAsync(args, Console.Out, Console.Error, CancellationToken.None);
}
