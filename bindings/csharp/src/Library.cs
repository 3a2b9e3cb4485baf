// Process-wide functions: version, result names, the live-handle counter and logging.
using System;
using System.Runtime.InteropServices;

namespace Tether
{
    /// <summary>Process-wide facts and settings of the native library.</summary>
    public static partial class Library
    {
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        private delegate void LogCallback(IntPtr userData, uint level, IntPtr message, UIntPtr messageLength);

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern IntPtr tether_version();

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern IntPtr tether_result_name(uint result);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern UIntPtr tether_live_handles();

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_set_log_callback(uint maxLevel, LogCallback callback, IntPtr userData);
        }

        private static int initialBufferSize = 256;

        // Kept in a static field for the life of the process: the library holds the pointer.
        private static readonly LogCallback logThunk = OnLog;
        private static readonly object logLock = new object();
        private static Action<LogLevel, string> log;
        private static LogLevel logLevel = LogLevel.Info;

        /// <summary>The native library's version, e.g. <c>0.1.0</c>.</summary>
        public static string Version
        {
            get { return Interop.FromUtf8(Native.tether_version()); }
        }

        /// <summary>The C name of a result code, e.g. <c>TETHER_RESULT_TIMEOUT</c>.</summary>
        public static string ResultName(Result result)
        {
            return Interop.FromUtf8(Native.tether_result_name((uint)result));
        }

        /// <summary>
        /// Native handles of every type alive in this process (for leak checks): created and
        /// not yet freed. Disposing a wrapper frees its handle.
        /// </summary>
        public static long LiveHandles
        {
            get { return (long)(ulong)Native.tether_live_handles(); }
        }

        /// <summary>
        /// The first buffer size tried for text the library writes (tokens, keys, ids). When
        /// it is too small the binding asks for the size needed and calls again, so this only
        /// trades a retry against memory. Default 256.
        /// </summary>
        public static int InitialBufferSize
        {
            get { return initialBufferSize; }
            set
            {
                if (value < 1)
                {
                    throw new ArgumentOutOfRangeException("value", "at least 1 byte");
                }
                initialBufferSize = value;
            }
        }

        /// <summary>
        /// The most detailed level <see cref="Log"/> receives (default Info).
        /// </summary>
        public static LogLevel LogLevel
        {
            get { return logLevel; }
            set
            {
                if (value < LogLevel.Error || value > LogLevel.Debug)
                {
                    throw new ArgumentOutOfRangeException("value");
                }
                lock (logLock)
                {
                    logLevel = value;
                    InstallLog();
                }
            }
        }

        /// <summary>
        /// The library's log lines (never keys, tokens or private keys). Handlers run on the
        /// thread that called into the library, typically inside <see cref="DeviceClient.Poll(int)"/>
        /// or <see cref="DeviceClient.Open(int)"/>; they must not call back into tether.
        /// An exception thrown by a handler is dropped (it cannot cross the native frames).
        /// </summary>
        public static event Action<LogLevel, string> Log
        {
            add
            {
                lock (logLock)
                {
                    log += value;
                    InstallLog();
                }
            }
            remove
            {
                lock (logLock)
                {
                    log -= value;
                    InstallLog();
                }
            }
        }

        private static void InstallLog()
        {
            Result r = Native.tether_set_log_callback((uint)logLevel, log == null ? null : logThunk, IntPtr.Zero);
            Interop.Check(r);
        }

        private static void OnLog(IntPtr userData, uint level, IntPtr message, UIntPtr messageLength)
        {
            try
            {
                Action<LogLevel, string> handlers = log;
                if (handlers != null)
                {
                    handlers((LogLevel)level, Interop.FromUtf8(message, checked((int)(ulong)messageLength)));
                }
            }
            catch (Exception)
            {
                // Nothing may unwind through the library's frames.
            }
        }
    }
}
