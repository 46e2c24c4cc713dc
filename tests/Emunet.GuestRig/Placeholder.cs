namespace Emunet.GuestRig; internal static class Placeholder { }
