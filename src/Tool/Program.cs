namespace Emunet.Tool;

internal static class Program
{
    private static int Main(string[] args)
    {
        Console.Error.WriteLine("emunet: not yet wired");
        return 1;
    }
}
