// The TLS policy: a builder (IoT Hub defaults) and the immutable configuration it builds.
using System;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Tether
{
    /// <summary>
    /// A TLS policy under construction, starting from the IoT Hub defaults (TLS 1.2, the hub's
    /// suites, DigiCert Global Root G2 and Microsoft RSA Root CA 2017). Not thread-safe.
    /// </summary>
    public sealed class TlsConfigBuilder : IDisposable
    {
        internal sealed class Handle : SafeHandleZeroOrMinusOneIsInvalid
        {
            public Handle() : base(true)
            {
            }

            protected override bool ReleaseHandle()
            {
                Native.tether_tls_config_builder_free(handle);
                return true;
            }
        }

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Handle tether_tls_config_builder_new();

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_tls_config_builder_free(IntPtr builder);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_enable_tls13(Handle builder, [MarshalAs(UnmanagedType.I1)] bool enable);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_set_embedded_roots(Handle builder, uint roots);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_enable_ecdsa_suites(Handle builder, [MarshalAs(UnmanagedType.I1)] bool enable);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_add_ca(Handle builder, byte[] ca, UIntPtr caLen);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_add_ca_file(Handle builder, byte[] path);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_set_client_cert(Handle builder, byte[] chain, UIntPtr chainLen, byte[] key, UIntPtr keyLen);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_set_client_cert_files(Handle builder, byte[] chainPath, byte[] keyPath);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_set_client_pkcs11(Handle builder, byte[] modulePath, byte[] uri, byte[] pin);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_builder_build(Handle builder, out TlsConfig.Handle config);
        }

        private readonly Handle handle;

        public TlsConfigBuilder()
        {
            handle = Native.tether_tls_config_builder_new();
            if (handle.IsInvalid)
            {
                throw Interop.Error(Result.Panic);
            }
        }

        private Handle Live
        {
            get
            {
                if (handle.IsClosed)
                {
                    throw new ObjectDisposedException("TlsConfigBuilder");
                }
                return handle;
            }
        }

        /// <summary>Also allows TLS 1.3 (IoT Hub offers it only on preview endpoints).</summary>
        public TlsConfigBuilder EnableTls13(bool enable = true)
        {
            Interop.Check(Native.tether_tls_config_builder_enable_tls13(Live, enable));
            return this;
        }

        /// <summary>Which embedded roots are trusted; <see cref="Roots.None"/> trusts only added CAs.</summary>
        public TlsConfigBuilder SetEmbeddedRoots(Roots roots)
        {
            Interop.Check(Native.tether_tls_config_builder_set_embedded_roots(Live, (uint)roots));
            return this;
        }

        /// <summary>Also offers the ECDHE-ECDSA AES-GCM suites.</summary>
        public TlsConfigBuilder EnableEcdsaSuites(bool enable = true)
        {
            Interop.Check(Native.tether_tls_config_builder_enable_ecdsa_suites(Live, enable));
            return this;
        }

        /// <summary>Trusts the CA certificates in <paramref name="ca"/> (PEM or DER).</summary>
        public TlsConfigBuilder AddCa(byte[] ca)
        {
            if (ca == null)
            {
                throw new ArgumentNullException("ca");
            }
            Interop.Check(Native.tether_tls_config_builder_add_ca(Live, ca, (UIntPtr)ca.Length));
            return this;
        }

        /// <summary>Trusts the CA certificates in a PEM or DER file.</summary>
        public TlsConfigBuilder AddCaFile(string path)
        {
            Interop.Check(Native.tether_tls_config_builder_add_ca_file(Live, Interop.Utf8(path)));
            return this;
        }

        /// <summary>Authenticates with a client certificate chain (leaf first) and its private key.</summary>
        public TlsConfigBuilder SetClientCertificate(byte[] chain, byte[] key)
        {
            if (chain == null || key == null)
            {
                throw new ArgumentNullException(chain == null ? "chain" : "key");
            }
            Interop.Check(Native.tether_tls_config_builder_set_client_cert(Live, chain, (UIntPtr)chain.Length, key, (UIntPtr)key.Length));
            return this;
        }

        /// <summary>As <see cref="SetClientCertificate"/>, reading PEM or DER files.</summary>
        public TlsConfigBuilder SetClientCertificateFiles(string chainPath, string keyPath)
        {
            Interop.Check(Native.tether_tls_config_builder_set_client_cert_files(Live, Interop.Utf8(chainPath), Interop.Utf8(keyPath)));
            return this;
        }

        /// <summary>Authenticates with a private key that never leaves a PKCS#11 token (HSM,
        /// TPM through tpm2-pkcs11, secure element) and the certificate stored beside it:
        /// <paramref name="modulePath"/> is the token's PKCS#11 library (null: the URI's
        /// module-path), <paramref name="uri"/> an RFC 7512 URI such as
        /// <c>pkcs11:token=device;object=device-key</c>, <paramref name="pin"/> the user PIN
        /// (null when the token needs none). See docs/pkcs11.md.</summary>
        public TlsConfigBuilder SetClientPkcs11(string modulePath, string uri, string pin)
        {
            if (uri == null)
            {
                throw new ArgumentNullException("uri");
            }
            byte[] pinBytes = pin == null ? null : Interop.Utf8(pin);
            try
            {
                Interop.Check(Native.tether_tls_config_builder_set_client_pkcs11(
                    Live, modulePath == null ? null : Interop.Utf8(modulePath), Interop.Utf8(uri), pinBytes));
            }
            finally
            {
                if (pinBytes != null)
                {
                    Array.Clear(pinBytes, 0, pinBytes.Length);
                }
            }
            return this;
        }

        /// <summary>Builds an immutable configuration; the builder can build again.</summary>
        public TlsConfig Build()
        {
            TlsConfig.Handle config;
            Result r = Native.tether_tls_config_builder_build(Live, out config);
            if (r != Result.Ok)
            {
                throw Interop.Error(r);
            }
            return new TlsConfig(config);
        }

        public void Dispose()
        {
            handle.Dispose();
        }
    }

    /// <summary>
    /// A finished TLS configuration under the IoT Hub policy. Safe to share between threads;
    /// a client keeps its own reference, so this may be disposed once clients are created.
    /// </summary>
    public sealed class TlsConfig : IDisposable
    {
        internal sealed class Handle : SafeHandleZeroOrMinusOneIsInvalid
        {
            public Handle() : base(true)
            {
            }

            protected override bool ReleaseHandle()
            {
                Native.tether_tls_config_free(handle);
                return true;
            }
        }

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_tls_config_free(IntPtr config);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_tls_config_check(Handle config, byte[] host, ushort port, uint timeoutMs,
                byte[] report, UIntPtr reportCap, out UIntPtr reportLen);
        }

        internal readonly Handle handle;

        internal TlsConfig(Handle handle)
        {
            this.handle = handle;
        }

        internal Handle Live
        {
            get
            {
                if (handle.IsClosed)
                {
                    throw new ObjectDisposedException("TlsConfig");
                }
                return handle;
            }
        }

        /// <summary>
        /// Connects to host:port, completes a TLS handshake under this policy and closes:
        /// returns e.g. <c>TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256</c>, or throws with the
        /// refusal's cause (version, suite, certificate...). Blocks the calling thread for up to
        /// <paramref name="timeoutMs"/> per step (null: <see cref="Defaults.TlsCheckTimeoutMs"/>).
        /// </summary>
        public string Check(string host, ushort port, int? timeoutMs = null)
        {
            uint timeout = timeoutMs.HasValue ? (uint)timeoutMs.Value : Library.Defaults.TlsCheckTimeoutMs;
            Handle h = Live;
            byte[] hostBytes = Interop.Utf8(host);
            return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) =>
                Native.tether_tls_config_check(h, hostBytes, port, timeout, b, c, out l));
        }

        public void Dispose()
        {
            handle.Dispose();
        }
    }
}
