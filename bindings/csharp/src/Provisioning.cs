// Device Provisioning Service registration (tether_dps_provision): which IoT Hub does this
// device belong to, and under which device id?
using System;
using System.Runtime.InteropServices;

namespace Tether
{
    /// <summary>Where and how to reach the Device Provisioning Service.</summary>
    public sealed class DpsOptions
    {
        /// <summary>The DPS host; null for <c>global.azure-devices-provisioning.net</c>.</summary>
        public string Endpoint { get; set; }
        /// <summary>The DPS MQTT port (default: <see cref="Library.Defaults"/>, 8883).</summary>
        public ushort Port { get; set; } = Library.Defaults.Port;
        /// <summary>
        /// True when the key is a group enrollment's device key (derived with
        /// <see cref="Dps.DeriveKey"/>); false for an individual enrollment's key.
        /// </summary>
        public bool GroupEnrollment { get; set; }
        /// <summary>
        /// The TLS policy for DPS: extra CAs, and the client certificate for X.509
        /// attestation; null for the IoT Hub defaults.
        /// </summary>
        public TlsConfig Tls { get; set; }
        /// <summary>
        /// The whole registration, polling included, must finish within this (default:
        /// <see cref="Defaults.DpsTimeoutMs"/> of <see cref="Library.Defaults"/>).
        /// </summary>
        public int TimeoutMilliseconds { get; set; } = (int)Library.Defaults.DpsTimeoutMs;
    }

    /// <summary>What DPS assigned: the IoT Hub and the device id there.</summary>
    public sealed class DpsAssignment
    {
        internal DpsAssignment(string assignedHub, string deviceId)
        {
            AssignedHub = assignedHub;
            DeviceId = deviceId;
        }

        /// <summary>The assigned IoT Hub's host name.</summary>
        public string AssignedHub { get; private set; }
        /// <summary>The device id in that hub.</summary>
        public string DeviceId { get; private set; }
    }

    public static partial class Dps
    {
        private static class ProvisionNative
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_dps_provision(byte[] endpoint, ushort port, byte[] idScope,
                byte[] registrationId, byte[] deviceKeyBase64, [MarshalAs(UnmanagedType.I1)] bool groupEnrollment,
                IntPtr tls, uint timeoutMs, byte[] hubOut, UIntPtr hubCap, out UIntPtr hubLen,
                byte[] deviceIdOut, UIntPtr deviceIdCap, out UIntPtr deviceIdLen);
        }

        /// <summary>
        /// Registers the device with DPS and returns the hub and device id it was assigned:
        /// TLS 1.2 under the IoT Hub policy, MQTT as <paramref name="registrationId"/>, register,
        /// then poll while DPS answers 202 (waiting its retry-after), all within
        /// <see cref="DpsOptions.TimeoutMilliseconds"/>. Authenticates with
        /// <paramref name="deviceKeyBase64"/> (SAS), or when it is null with the client
        /// certificate in <see cref="DpsOptions.Tls"/> (X.509). Blocks the calling thread.
        /// Throws <see cref="TetherException"/>: <c>NotAuthorized</c> with DPS's status and
        /// text when DPS refuses, <c>Timeout</c>, TLS and network results.
        /// </summary>
        public static DpsAssignment Provision(string idScope, string registrationId, string deviceKeyBase64,
            DpsOptions options = null)
        {
            if (idScope == null)
            {
                throw new ArgumentNullException("idScope");
            }
            if (registrationId == null)
            {
                throw new ArgumentNullException("registrationId");
            }
            options = options ?? new DpsOptions();
            if (options.TimeoutMilliseconds <= 0)
            {
                throw new ArgumentOutOfRangeException("options", "TimeoutMilliseconds must be positive");
            }
            byte[] endpoint = Interop.Utf8(options.Endpoint);
            byte[] scope = Interop.Utf8(idScope);
            byte[] registration = Interop.Utf8(registrationId);
            byte[] key = Interop.Utf8(deviceKeyBase64);
            TlsConfig.Handle tls = options.Tls == null ? null : options.Tls.Live;
            bool added = false;
            try
            {
                IntPtr tlsPtr = Interop.AddRef(tls, ref added);
                // 254 bytes always fit a host name and 129 a device id (tether.h); a smaller
                // buffer is answered BUFFER_TOO_SMALL with the sizes, and asking again returns
                // the same assignment.
                byte[] hub = new byte[256];
                byte[] device = new byte[136];
                for (int attempt = 0; ; attempt++)
                {
                    UIntPtr hubLen, deviceLen;
                    Result r = ProvisionNative.tether_dps_provision(endpoint, options.Port, scope, registration, key,
                        options.GroupEnrollment, tlsPtr, (uint)options.TimeoutMilliseconds,
                        hub, (UIntPtr)hub.Length, out hubLen, device, (UIntPtr)device.Length, out deviceLen);
                    if (r == Result.BufferTooSmall && attempt == 0)
                    {
                        hub = new byte[Math.Max(hub.Length, checked((int)(ulong)hubLen + 1))];
                        device = new byte[Math.Max(device.Length, checked((int)(ulong)deviceLen + 1))];
                        continue;
                    }
                    Interop.Check(r);
                    return new DpsAssignment(
                        System.Text.Encoding.UTF8.GetString(hub, 0, checked((int)(ulong)hubLen)),
                        System.Text.Encoding.UTF8.GetString(device, 0, checked((int)(ulong)deviceLen)));
                }
            }
            finally
            {
                if (added)
                {
                    tls.DangerousRelease();
                }
                if (key != null)
                {
                    Array.Clear(key, 0, key.Length);
                }
            }
        }
            private static class CsrNative
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_dps_provision_with_csr(byte[] endpoint, ushort port, byte[] idScope,
                byte[] registrationId, byte[] deviceKeyBase64, [MarshalAs(UnmanagedType.I1)] bool groupEnrollment,
                IntPtr tls, uint timeoutMs, CredentialStore.Handle store);
        }

        /// <summary>
        /// Registers the device with DPS and has DPS issue its certificate from a CSR (a fresh
        /// P-256 key made by the library; api-version 2025-07-01-preview). The issued chain is
        /// checked (for that key, valid now, chaining to a root <see cref="DpsOptions.Tls"/>
        /// trusts) and stored with the key in <paramref name="credentialsDir"/> (written
        /// atomically; the key file is mode 0600). Returns the stored generation.
        /// Authentication as <see cref="Provision"/>. Throws <see cref="TetherException"/>:
        /// <c>CertIssuanceRefused</c>, <c>HubRequiresMqttV5</c>, <c>KeyCertMismatch</c>,
        /// <c>CertUntrusted</c>, and the results of <see cref="Provision"/>.
        /// </summary>
        public static ulong ProvisionWithCsr(string idScope, string registrationId, string deviceKeyBase64,
            string credentialsDir, DpsOptions options = null)
        {
            if (idScope == null)
            {
                throw new ArgumentNullException("idScope");
            }
            if (registrationId == null)
            {
                throw new ArgumentNullException("registrationId");
            }
            options = options ?? new DpsOptions();
            byte[] key = Interop.Utf8(deviceKeyBase64);
            TlsConfig.Handle tls = options.Tls == null ? null : options.Tls.Live;
            bool added = false;
            using (CredentialStore store = CredentialStore.Open(credentialsDir))
            {
                try
                {
                    IntPtr tlsPtr = Interop.AddRef(tls, ref added);
                    Interop.Check(CsrNative.tether_dps_provision_with_csr(Interop.Utf8(options.Endpoint), options.Port,
                        Interop.Utf8(idScope), Interop.Utf8(registrationId), key, options.GroupEnrollment, tlsPtr,
                        (uint)Math.Max(1, options.TimeoutMilliseconds), store.Live));
                    return store.Generation;
                }
                finally
                {
                    if (added)
                    {
                        tls.DangerousRelease();
                    }
                    if (key != null)
                    {
                        Array.Clear(key, 0, key.Length);
                    }
                }
            }
        }
    }

    /// <summary>A credential store folder (<c>tether_credential_store</c>): each generation of
    /// the issued certificate, its key and the hub in <c>DIR/gen-N/</c>, written atomically.</summary>
    internal sealed class CredentialStore : IDisposable
    {
        internal sealed class Handle : Microsoft.Win32.SafeHandles.SafeHandleZeroOrMinusOneIsInvalid
        {
            public Handle() : base(true)
            {
            }

            protected override bool ReleaseHandle()
            {
                Native.tether_credential_store_free(handle);
                return true;
            }
        }

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_credential_store_open(byte[] dir, out Handle store);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_credential_store_free(IntPtr store);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_credential_store_generation(Handle store, out ulong generation);
        }

        private readonly Handle store;

        private CredentialStore(Handle store)
        {
            this.store = store;
        }

        internal static CredentialStore Open(string dir)
        {
            if (dir == null)
            {
                throw new ArgumentNullException("credentialsDir");
            }
            Handle h;
            Interop.Check(Native.tether_credential_store_open(Interop.Utf8(dir), out h));
            return new CredentialStore(h);
        }

        internal Handle Live
        {
            get
            {
                if (store.IsClosed)
                {
                    throw new ObjectDisposedException("CredentialStore");
                }
                return store;
            }
        }

        /// <summary>The generation in force (1 for the first certificate, one more per renewal).</summary>
        internal ulong Generation
        {
            get
            {
                ulong g;
                Interop.Check(Native.tether_credential_store_generation(Live, out g));
                return g;
            }
        }

        public void Dispose()
        {
            store.Dispose();
        }
    }
}
