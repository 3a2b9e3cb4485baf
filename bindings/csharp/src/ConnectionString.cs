// A parsed, validated IoT Hub connection string.
using System;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Tether
{
    /// <summary>
    /// A parsed IoT Hub device or module connection string
    /// (<c>HostName=...;DeviceId=...;SharedAccessKey=...</c>). Disposing wipes the key.
    /// </summary>
    public sealed class ConnectionString : IDisposable
    {
        internal sealed class Handle : SafeHandleZeroOrMinusOneIsInvalid
        {
            public Handle() : base(true)
            {
            }

            protected override bool ReleaseHandle()
            {
                Native.tether_connection_string_free(handle);
                return true;
            }
        }

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_parse(byte[] text, out Handle cs);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_connection_string_free(IntPtr cs);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_host_name(Handle cs, byte[] output, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_device_id(Handle cs, byte[] output, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_module_id(Handle cs, byte[] output, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_gateway_host_name(Handle cs, byte[] output, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_key_name(Handle cs, byte[] output, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern uint tether_connection_string_auth(Handle cs);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_connection_string_sas_token(Handle cs, ulong nowUnix, ulong ttlSecs,
                byte[] output, UIntPtr cap, out UIntPtr len);
        }

        private readonly Handle handle;

        private ConnectionString(Handle handle)
        {
            this.handle = handle;
        }

        /// <summary>Parses and validates; throws <see cref="TetherException"/> saying what is wrong.</summary>
        public static ConnectionString Parse(string text)
        {
            if (text == null)
            {
                throw new ArgumentNullException("text");
            }
            byte[] bytes = Interop.Utf8(text);
            try
            {
                Handle h;
                Result r = Native.tether_connection_string_parse(bytes, out h);
                if (r != Result.Ok)
                {
                    throw Interop.Error(r);
                }
                return new ConnectionString(h);
            }
            finally
            {
                Array.Clear(bytes, 0, bytes.Length);
            }
        }

        private Handle Live
        {
            get
            {
                if (handle.IsClosed)
                {
                    throw new ObjectDisposedException("ConnectionString");
                }
                return handle;
            }
        }

        public string HostName
        {
            get
            {
                Handle h = Live;
                return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_connection_string_host_name(h, b, c, out l));
            }
        }

        public string DeviceId
        {
            get
            {
                Handle h = Live;
                return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_connection_string_device_id(h, b, c, out l));
            }
        }

        /// <summary>The module id, or null for a device identity.</summary>
        public string ModuleId
        {
            get
            {
                Handle h = Live;
                return Optional((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_connection_string_module_id(h, b, c, out l));
            }
        }

        /// <summary>GatewayHostName, or null.</summary>
        public string GatewayHostName
        {
            get
            {
                Handle h = Live;
                return Optional((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_connection_string_gateway_host_name(h, b, c, out l));
            }
        }

        /// <summary>SharedAccessKeyName, or null.</summary>
        public string SharedAccessKeyName
        {
            get
            {
                Handle h = Live;
                return Optional((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_connection_string_key_name(h, b, c, out l));
            }
        }

        public AuthKind Auth
        {
            get { return (AuthKind)Native.tether_connection_string_auth(Live); }
        }

        /// <summary>The SAS token for this identity as of now, valid for <paramref name="ttl"/>.</summary>
        public string SasToken(TimeSpan ttl)
        {
            return SasToken((ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds(), (ulong)ttl.TotalSeconds);
        }

        /// <summary>The SAS token for this identity as of <paramref name="nowUnix"/>.</summary>
        public string SasToken(ulong nowUnix, ulong ttlSeconds)
        {
            Handle h = Live;
            return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) =>
                Native.tether_connection_string_sas_token(h, nowUnix, ttlSeconds, b, c, out l));
        }

        private static string Optional(BufferCall call)
        {
            try
            {
                return Interop.CallString(call);
            }
            catch (TetherException e)
            {
                if (e.Result == Result.NotFound)
                {
                    return null;
                }
                throw;
            }
        }

        public void Dispose()
        {
            handle.Dispose();
        }
    }
}
