// The library's defaults (tether_defaults_get): every default of this binding is read from
// here at run time, so C#, C, Python and the CLI agree.
using System;
using System.Runtime.InteropServices;

namespace Tether
{
    /// <summary>
    /// tether's defaults (<c>struct tether_defaults</c>), as the native library decides them:
    /// read them with <see cref="Library.Defaults"/>. Times are in the unit their name ends with.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Defaults
    {
        /// <summary>TCP port of IoT Hub's and DPS's MQTT endpoints (8883).</summary>
        public readonly ushort Port;
        /// <summary>MQTT keep-alive, seconds.</summary>
        public readonly ushort KeepAliveSecs;
        /// <summary>The largest keep-alive IoT Hub accepts, seconds.</summary>
        public readonly ushort MaxKeepAliveSecs;
        /// <summary>Lifetime of the SAS tokens tether makes from a key, seconds.</summary>
        public readonly uint TokenTtlSecs;
        /// <summary>The smallest token lifetime a client accepts, seconds.</summary>
        public readonly uint MinTokenTtlSecs;
        /// <summary>A token is renewed at least this long before it expires, seconds...</summary>
        public readonly uint RenewalMarginMinSecs;
        /// <summary>...or this percentage of its lifetime when larger (at most half of it).</summary>
        public readonly uint RenewalMarginPercent;
        /// <summary>Most QoS 1 messages waiting for PUBACK.</summary>
        public readonly uint MaxInflight;
        /// <summary>Most bytes of output waiting to be written before sending is refused.</summary>
        public readonly UIntPtr MaxUnsentBytes;
        /// <summary>Time allowed for each phase of a connection attempt (TCP, then TLS + CONNACK), ms.</summary>
        public readonly uint ConnectTimeoutMs;
        /// <summary>Back-off after a failed connection: the first delay is twice this, ms.</summary>
        public readonly uint RetryMinMs;
        /// <summary>Back-off cap, ms.</summary>
        public readonly uint RetryMaxMs;
        /// <summary>Most random jitter added to each back-off delay, ms.</summary>
        public readonly uint RetryJitterMs;
        /// <summary>Time allowed for a whole DPS registration, ms.</summary>
        public readonly uint DpsTimeoutMs;
        /// <summary>Wait before polling DPS again when it names no retry-after, ms.</summary>
        public readonly uint DpsPollIntervalMs;
        /// <summary>The longest wait between DPS polls, ms.</summary>
        public readonly uint DpsPollMaxMs;
        /// <summary>Time allowed for each step of a TLS check (<see cref="TlsConfig.Check"/>), ms.</summary>
        public readonly uint TlsCheckTimeoutMs;
    }

    public static partial class Library
    {
        private static class DefaultsNative
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern IntPtr tether_defaults_get();
        }

        /// <summary>The native library's defaults (read once; they never change in a process).</summary>
        public static Defaults Defaults
        {
            get { return defaults.Value; }
        }

        private static readonly Lazy<Defaults> defaults = new Lazy<Defaults>(
            () => (Defaults)Marshal.PtrToStructure(DefaultsNative.tether_defaults_get(), typeof(Defaults)));
    }
}
