using System.Globalization;

namespace Emunet.Engine.Control;

/// <summary>Short texts for tables (the tool's and the module's views): at most 6 characters each.</summary>
public static class DisplayText
{
    /// <summary>
    /// An address and port as one endpoint: <c>127.0.0.1:8080</c>, or <c>[::1]:8080</c> for IPv6 (RFC 3986 §3.2.2's
    /// brackets, as <see cref="System.Net.IPEndPoint"/> writes it), so the port cannot be read as part of the address.
    /// </summary>
    public static string EndPoint(string address, int port)
    {
        string p = port.ToString(CultureInfo.InvariantCulture);
        return address.Contains(':') ? "[" + address + "]:" + p : address + ":" + p;
    }

    /// <summary>"9999 B", then "9999 K" (KiB), "9999 M", "9999 G".</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["B", "K", "M", "G", "T"];
        int unit = 0;
        while (bytes >= 10_000 && unit < units.Length - 1)
        {
            bytes /= 1024;
            unit++;
        }
        return string.Create(CultureInfo.InvariantCulture, $"{bytes} {units[unit]}");
    }

    /// <summary>Seconds up to 2 minutes, minutes up to 2 hours, then hours: "59s", "119m", "26h".</summary>
    public static string Age(TimeSpan age) => age.TotalSeconds switch
    {
        < 0 => "0s",
        < 120 => ((int)age.TotalSeconds).ToString(CultureInfo.InvariantCulture) + "s",
        < 7200 => ((int)age.TotalMinutes).ToString(CultureInfo.InvariantCulture) + "m",
        _ => ((int)age.TotalHours).ToString(CultureInfo.InvariantCulture) + "h",
    };
}
