// Certificates issued by DPS from a CSR and renewed through the hub, against the local IoT Hub
// stand-in (`tether hub --dps-port`, started by test.sh with an enrollment for "cs-cert-device").
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;

namespace Tether.Tests
{
    public static class CertificateTests
    {
        private const string Scope = "0ne0000CE27";
        private const string Registration = "cs-cert-device";
        private const string Key = "Y2VydHMgdGVzdCBlbnJvbGxtZW50IGtleSwgdGVzdHMgb25seQ==";

        [Test]
        public static void DpsIssuesACertificateTheClientConnectsWithAndRenews()
        {
            string dir = Path.Combine(Path.GetTempPath(), "tether-cs-creds-" + Process.GetCurrentProcess().Id);
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, true);
            }
            TlsConfigBuilder builder = new TlsConfigBuilder();
            using (TlsConfig tls = builder.AddCaFile(Hub.Setting("TETHER_TEST_STANDIN_CA")).Build())
            {
                builder.Dispose();
                ulong generation = Dps.ProvisionWithCsr(Scope, Registration, Key, dir, new DpsOptions
                {
                    Endpoint = "localhost", Port = ushort.Parse(Hub.Setting("TETHER_TEST_STANDIN_DPS")), Tls = tls,
                    TimeoutMilliseconds = 30000,
                });
                Assert.Equal(1UL, generation, "first generation");
                Assert.True(File.Exists(Path.Combine(dir, "gen-1", "chain.pem")), "chain stored");
                List<CertificateStatus> seen = new List<CertificateStatus>();
                using (DeviceClient client = DeviceClient.CreateFromCredentials(dir, new ClientOptions
                {
                    Port = ushort.Parse(Hub.Setting("TETHER_TEST_STANDIN_X509")), Tls = tls,
                }))
                {
                    client.CertificateChanged += seen.Add;
                    client.Open(30000);
                    ulong first = client.SendEvent(System.Text.Encoding.UTF8.GetBytes("issued"));
                    Assert.True(client.WaitForAcknowledgement(first, 10000), "sent with the issued certificate");
                    client.RenewCertificate();
                    Stopwatch clock = Stopwatch.StartNew();
                    while (!seen.Exists(s => s.Kind == "swapped"))
                    {
                        Assert.True(clock.ElapsedMilliseconds < 40000, "renewed within 40 s (" + seen.Count + " events)");
                        client.Poll(200);
                    }
                    Assert.Equal("renewal_requested", seen[0].Kind, "first event");
                    Assert.Equal("issued", seen[1].Kind, "second event");
                    Assert.True(seen[2].NotAfterUnixSeconds > (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
                        "the renewed certificate is valid");
                    ulong after = client.SendEvent(System.Text.Encoding.UTF8.GetBytes("renewed"));
                    Assert.True(client.WaitForAcknowledgement(after, 10000), "sent with the renewed certificate");
                }
                Assert.True(File.Exists(Path.Combine(dir, "gen-2", "chain.pem")), "renewal stored as generation 2");
            }
            Directory.Delete(dir, true);
        }
    }
}
