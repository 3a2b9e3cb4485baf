// Published vectors, errors, buffers and handle lifetimes: no broker needed.
using System;
using System.Collections.Generic;
using System.IO;
using System.Security.Cryptography;
using System.Text;

namespace Tether.Tests
{
    public static class PrimitiveTests
    {
        const string VectorKey = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

        static string Hmac(string keyBase64, string text)
        {
            using (HMACSHA256 h = new HMACSHA256(Convert.FromBase64String(keyBase64)))
            {
                return Convert.ToBase64String(h.ComputeHash(Encoding.UTF8.GetBytes(text)));
            }
        }

        static Dictionary<string, string> TokenFields(string token)
        {
            const string prefix = "SharedAccessSignature ";
            Assert.True(token.StartsWith(prefix, StringComparison.Ordinal), "token prefix: " + token);
            Dictionary<string, string> fields = new Dictionary<string, string>();
            foreach (string part in token.Substring(prefix.Length).Split('&'))
            {
                int eq = part.IndexOf('=');
                fields[part.Substring(0, eq)] = part.Substring(eq + 1);
            }
            return fields;
        }

        [Test]
        public static void SasTokenSignatureFollowsThePublishedVectors()
        {
            // The checker itself against the published HMAC vector.
            Assert.Equal("8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M=", Hmac(VectorKey, "sign this message"), "HMAC vector");

            string token = Sas.Token("myiothub.azure-devices.net/devices/my_device", VectorKey, null, 1578941692);
            Dictionary<string, string> f = TokenFields(token);
            Assert.Equal("myiothub.azure-devices.net%2Fdevices%2Fmy_device", f["sr"], "sr");
            Assert.Equal("1578941692", f["se"], "se");
            Assert.True(!f.ContainsKey("skn"), "no skn for a device key");
            string sig = Uri.UnescapeDataString(f["sig"]);
            Assert.Equal(Hmac(VectorKey, "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"), sig, "signature");
            Assert.True(!f["sig"].Contains("+") && !f["sig"].Contains("/") && !f["sig"].Contains("="), "signature URL-encoded: " + f["sig"]);

            string module = Sas.Token("myiothub.azure-devices.net/devices/my_device/modules/my_module", VectorKey, null, 1578941692);
            f = TokenFields(module);
            Assert.Equal("myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module", f["sr"], "module sr");
            Assert.Equal(Hmac(VectorKey, f["sr"] + "\n1578941692"), Uri.UnescapeDataString(f["sig"]), "module signature");

            string dps = Sas.Token("0neFEEDC0DE/registrations/my-reg", VectorKey, "registration", 1578941692);
            Assert.Equal("registration", TokenFields(dps)["skn"], "skn");
        }

        [Test]
        public static void SasTokenMatchesOneMadeWithOpenssl()
        {
            // test.sh made TETHER_TEST_TOKEN with openssl for the local hub's device.
            ulong expiry = ulong.Parse(Hub.Setting("TETHER_TEST_EXPIRY"));
            Assert.Equal(Hub.Token, Sas.Token("localhost/devices/" + Hub.Device, Hub.Key, null, expiry), "token");
        }

        [Test]
        public static void DpsDerivedKeyFollowsThePublishedVector()
        {
            Assert.Equal("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=",
                Dps.DeriveKey("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
                    "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"), "derived key");
        }

        static byte[] PemToDer(string pem)
        {
            int start = pem.IndexOf("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal);
            int end = pem.IndexOf("-----END CERTIFICATE-----", StringComparison.Ordinal);
            string body = pem.Substring(start + 27, end - start - 27);
            return Convert.FromBase64String(body.Replace("\n", "").Replace("\r", ""));
        }

        static string Hex(byte[] digest)
        {
            return BitConverter.ToString(digest).Replace("-", "");
        }

        [Test]
        public static void ThumbprintsAreTheDigestsOfTheDerCertificate()
        {
            byte[] pem = File.ReadAllBytes(Hub.CaFile);
            byte[] der = PemToDer(Encoding.ASCII.GetString(pem));
            using (SHA256 sha256 = SHA256.Create())
            using (SHA1 sha1 = SHA1.Create())
            {
                Assert.Equal(Hex(sha256.ComputeHash(der)), X509.Thumbprint(pem), "SHA-256 from PEM");
                Assert.Equal(Hex(sha256.ComputeHash(der)), X509.Thumbprint(der, ThumbprintAlgorithm.Sha256), "SHA-256 from DER");
                Assert.Equal(Hex(sha1.ComputeHash(der)), X509.Thumbprint(pem, ThumbprintAlgorithm.Sha1), "SHA-1");
            }
            Assert.Fails(Result.CertMalformed, () => X509.Thumbprint(Encoding.ASCII.GetBytes("not a certificate")), "garbage");
        }

        [Test]
        public static void TooSmallBuffersAreRetriedInsideTheBinding()
        {
            string token = Sas.Token("myhub.azure-devices.net/devices/d1", VectorKey, "a-long-policy-name-for-a-long-token", 1900000000);
            string key = Dps.DeriveKey(VectorKey, "reg-1");
            byte[] pem = File.ReadAllBytes(Hub.CaFile);
            string thumb = X509.Thumbprint(pem);
            int before = Library.InitialBufferSize;
            try
            {
                foreach (int size in new int[] { 1, 2, 44, 45 })
                {
                    Library.InitialBufferSize = size;
                    Assert.Equal(token, Sas.Token("myhub.azure-devices.net/devices/d1", VectorKey, "a-long-policy-name-for-a-long-token", 1900000000), "token at " + size);
                    Assert.Equal(key, Dps.DeriveKey(VectorKey, "reg-1"), "derived key at " + size);
                    Assert.Equal(thumb, X509.Thumbprint(pem), "thumbprint at " + size);
                    using (ConnectionString cs = ConnectionString.Parse("HostName=myhub.azure-devices.net;DeviceId=d1;SharedAccessKey=" + VectorKey))
                    {
                        Assert.Equal("myhub.azure-devices.net", cs.HostName, "host at " + size);
                    }
                }
                Assert.True(token.Length > 45 && thumb.Length > 45, "the outputs are longer than the first buffers tried");
                Library.InitialBufferSize = 256;
                Assert.Equal(token, Sas.Token("myhub.azure-devices.net/devices/d1", VectorKey, "a-long-policy-name-for-a-long-token", 1900000000), "token at 256");
            }
            finally
            {
                Library.InitialBufferSize = before;
            }
            Assert.Throws<ArgumentOutOfRangeException>(() => Library.InitialBufferSize = 0, "size 0");
        }

        [Test]
        public static void BadConnectionStringsThrowWithTheirCode()
        {
            TetherException e = Assert.Fails(Result.ConnectionStringInvalid,
                () => DeviceClient.CreateFromConnectionString("HostName=myhub.azure-devices.net;SharedAccessKey=" + VectorKey), "no DeviceId");
            Assert.Contains("DeviceId", e.Message, "message");
            Assert.Equal("TETHER_RESULT_CONNECTION_STRING_INVALID", e.ResultName, "result name");
            Assert.Fails(Result.SasKeyInvalid,
                () => DeviceClient.CreateFromConnectionString("HostName=h;DeviceId=d;SharedAccessKey=%%%not-base64"), "bad key");
            Assert.Fails(Result.ConnectionStringInvalid, () => ConnectionString.Parse("garbage"), "garbage");
            Assert.Fails(Result.IdInvalid, () => Sas.Token("myhub/devices/has space", VectorKey, null, 1900000000), "bad id");
            Assert.Fails(Result.SasKeyInvalid, () => Dps.DeriveKey("", "reg"), "empty group key");
            Assert.Throws<ArgumentNullException>(() => DeviceClient.CreateFromConnectionString(null), "null string");
            Assert.Equal("TETHER_RESULT_TIMEOUT", Library.ResultName(Result.Timeout), "result name");
        }

        [Test]
        public static void ConnectionStringsExposeTheirParts()
        {
            using (ConnectionString cs = ConnectionString.Parse(
                "HostName=myhub.azure-devices.net;DeviceId=d1;ModuleId=m1;SharedAccessKey=" + VectorKey))
            {
                Assert.Equal("myhub.azure-devices.net", cs.HostName, "host");
                Assert.Equal("d1", cs.DeviceId, "device");
                Assert.Equal("m1", cs.ModuleId, "module");
                Assert.Equal(null, cs.GatewayHostName, "gateway");
                Assert.Equal(AuthKind.SasKey, cs.Auth, "auth");
                Dictionary<string, string> f = TokenFields(cs.SasToken(1900000000, 3600));
                Assert.Equal("myhub.azure-devices.net%2Fdevices%2Fd1%2Fmodules%2Fm1", f["sr"], "sr");
                Assert.Equal("1900003600", f["se"], "se");
            }
        }

        [Test]
        public static void DisposedObjectsThrowObjectDisposedException()
        {
            DeviceClient client = DeviceClient.CreateFromConnectionString("HostName=h;DeviceId=d;SharedAccessKey=" + VectorKey);
            client.Dispose();
            client.Dispose();
            client.Close();
            Assert.Throws<ObjectDisposedException>(() => client.Poll(0), "Poll");
            Assert.Throws<ObjectDisposedException>(() => client.Open(10), "Open");
            Assert.Throws<ObjectDisposedException>(() => client.SendEvent(new byte[] { 1 }), "SendEvent");
            Assert.Throws<ObjectDisposedException>(() => client.RequestTwin(), "RequestTwin");
            Assert.Throws<ObjectDisposedException>(() => client.Subscribe(Subscriptions.All), "Subscribe");

            TlsConfigBuilder builder = new TlsConfigBuilder();
            TlsConfig config = builder.Build();
            builder.Dispose();
            Assert.Throws<ObjectDisposedException>(() => builder.Build(), "Build");
            Assert.Throws<ObjectDisposedException>(() => builder.AddCaFile(Hub.CaFile), "AddCaFile");
            config.Dispose();
            Assert.Throws<ObjectDisposedException>(() => DeviceClient.CreateFromConnectionString(
                "HostName=h;DeviceId=d;SharedAccessKey=" + VectorKey, new ClientOptions { Tls = config }), "client with a disposed config");

            ConnectionString cs = ConnectionString.Parse("HostName=h;DeviceId=d;SharedAccessKey=" + VectorKey);
            cs.Dispose();
            Assert.Throws<ObjectDisposedException>(() => { string h = cs.HostName; }, "HostName");
        }

        [Test]
        public static void TlsBuilderReportsBadInput()
        {
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            {
                Assert.Fails(Result.FileNotReadable, () => builder.AddCaFile("/nonexistent/ca.pem"), "missing file");
                Assert.Fails(Result.CertMalformed, () => builder.AddCa(Encoding.ASCII.GetBytes("not a certificate")), "garbage CA");
                builder.SetEmbeddedRoots(Roots.None);
                Assert.Fails(Result.InvalidArgument, () => builder.Build(), "no trust anchor");
            }
        }

        [Test]
        public static void NoNativeHandleLeaksOver10000Cycles()
        {
            long start = Library.LiveHandles;
            string cs = "HostName=myhub.azure-devices.net;DeviceId=d1;SharedAccessKey=" + VectorKey;
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            using (TlsConfig tls = builder.AddCaFile(Hub.CaFile).Build())
            {
                Assert.Equal(start + 2, Library.LiveHandles, "builder and config alive");
                for (int i = 0; i < 10000; i++)
                {
                    using (DeviceClient client = DeviceClient.CreateFromConnectionString(cs, new ClientOptions { Tls = tls, Port = 8883 }))
                    using (ConnectionString parsed = ConnectionString.Parse(cs))
                    using (TlsConfigBuilder b = new TlsConfigBuilder())
                    {
                        if (i == 0)
                        {
                            Assert.Equal(start + 5, Library.LiveHandles, "three more alive inside the cycle");
                        }
                    }
                    // Failures must not leak either.
                    try
                    {
                        ConnectionString.Parse("HostName=only");
                    }
                    catch (TetherException)
                    {
                    }
                }
            }
            Assert.Equal(start, Library.LiveHandles, "live handles after 10,000 cycles");
        }
    }
}
