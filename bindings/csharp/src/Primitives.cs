// Stateless primitives: SAS tokens, DPS group-key derivation, X.509 thumbprints.
using System;
using System.Runtime.InteropServices;

namespace Tether
{
    /// <summary>Shared access signature tokens.</summary>
    public static class Sas
    {
        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_sas_token(byte[] resourceUri, byte[] keyBase64, byte[] keyName,
                ulong expiryUnix, byte[] output, UIntPtr outCap, out UIntPtr outLen);
        }

        /// <summary>
        /// A token <c>SharedAccessSignature sr=...&amp;sig=...&amp;se=...[&amp;skn=...]</c> for the
        /// unencoded <paramref name="resourceUri"/> (<c>{host}/devices/{id}</c>, a module, or a
        /// DPS registration), signed with the base64 key, expiring at
        /// <paramref name="expiryUnix"/> (seconds since 1970). <paramref name="keyName"/> is the
        /// policy (<c>skn</c>), or null for a device key.
        /// </summary>
        public static string Token(string resourceUri, string keyBase64, string keyName, ulong expiryUnix)
        {
            byte[] uri = Interop.Utf8(resourceUri);
            byte[] key = Interop.Utf8(keyBase64);
            byte[] name = Interop.Utf8(keyName);
            try
            {
                return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) =>
                    Native.tether_sas_token(uri, key, name, expiryUnix, b, c, out l));
            }
            finally
            {
                if (key != null)
                {
                    Array.Clear(key, 0, key.Length);
                }
            }
        }

        /// <summary>A token expiring <paramref name="ttl"/> from now (device clock).</summary>
        public static string Token(string resourceUri, string keyBase64, string keyName, TimeSpan ttl)
        {
            ulong expiry = (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds() + (ulong)ttl.TotalSeconds;
            return Token(resourceUri, keyBase64, keyName, expiry);
        }
    }

    /// <summary>Device Provisioning Service helpers.</summary>
    public static partial class Dps
    {
        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_dps_derive_key(byte[] groupKeyBase64, byte[] registrationId,
                byte[] output, UIntPtr outCap, out UIntPtr outLen);
        }

        /// <summary>
        /// A device's key for a symmetric-key group enrollment:
        /// base64(HMAC-SHA256(group key, registration id)). Do this on the production line.
        /// </summary>
        public static string DeriveKey(string groupKeyBase64, string registrationId)
        {
            byte[] key = Interop.Utf8(groupKeyBase64);
            byte[] id = Interop.Utf8(registrationId);
            try
            {
                return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) =>
                    Native.tether_dps_derive_key(key, id, b, c, out l));
            }
            finally
            {
                if (key != null)
                {
                    Array.Clear(key, 0, key.Length);
                }
            }
        }
    }

    /// <summary>X.509 certificate helpers.</summary>
    public static class X509
    {
        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_x509_thumbprint(byte[] cert, UIntPtr certLen, uint algorithm,
                byte[] output, UIntPtr outCap, out UIntPtr outLen);
        }

        /// <summary>
        /// The thumbprint of the first certificate in <paramref name="certificate"/> (PEM or
        /// DER) as uppercase hex, as the IoT Hub portal and CLI show it.
        /// </summary>
        public static string Thumbprint(byte[] certificate, ThumbprintAlgorithm algorithm = ThumbprintAlgorithm.Sha256)
        {
            if (certificate == null)
            {
                throw new ArgumentNullException("certificate");
            }
            return Interop.CallString((byte[] b, UIntPtr c, out UIntPtr l) =>
                Native.tether_x509_thumbprint(certificate, (UIntPtr)certificate.Length, (uint)algorithm, b, c, out l));
        }
    }
}
