namespace Emunet.Tool;

/// <summary>Left-aligned text columns for people; the header is underlined with dashes.</summary>
internal sealed class TableWriter
{
    private readonly string[] _headers;
    private readonly List<string[]> _rows = new();

    public TableWriter(params string[] headers) => _headers = headers;

    public void Add(params string?[] cells) => _rows.Add(Array.ConvertAll(cells, c => c ?? "-"));

    public void WriteTo(TextWriter output)
    {
        var widths = new int[_headers.Length];
        for (int i = 0; i < widths.Length; i++)
        {
            widths[i] = _headers[i].Length;
            foreach (var row in _rows) widths[i] = Math.Max(widths[i], row[i].Length);
        }
        WriteRow(output, _headers, widths);
        var dashes = new string[_headers.Length];
        for (int i = 0; i < dashes.Length; i++) dashes[i] = new string('-', widths[i]);
        WriteRow(output, dashes, widths);
        foreach (var row in _rows) WriteRow(output, row, widths);
    }

    private static void WriteRow(TextWriter output, string[] cells, int[] widths)
    {
        var line = new System.Text.StringBuilder();
        for (int i = 0; i < cells.Length; i++)
        {
            if (i > 0) line.Append("  ");
            line.Append(i == cells.Length - 1 ? cells[i] : cells[i].PadRight(widths[i]));
        }
        output.WriteLine(line.ToString());
    }
}
