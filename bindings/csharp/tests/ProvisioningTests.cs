// DPS provisioning against the scripted DPS the Python tests use (tests/dps_peer.py runs
// bindings/python/tests/dps_responder.py: TLS 1.2 with the test PKI, just enough MQTT), then
// onward to the assigned hub: the local IoT Hub stand-in (`tether hub`, started by test.sh).
using System;
using System.Diagnostics;
using System.IO;

namespace Tether.Tests
{
    /// <summary>One scripted DPS process; <see cref="Seen"/> is what the device sent.</summary>
    public sealed class DpsPeer : IDisposable
    {
        private readonly Process process;

        public DpsPeer(string repliesJson)
        {
            Hub.Require("python3", "python3");
            string script = Path.Combine(Hub.Setting("TETHER_TEST_CSHARP_DIR"), "tests", "dps_peer.py");
            ProcessStartInfo info = new ProcessStartInfo("python3",
                Hub.Quote(script) + " " + Hub.Quote(Hub.Setting("TETHER_TEST_SERVER_CERT")) + " " +
                Hub.Quote(Hub.Setting("TETHER_TEST_SERVER_KEY")) + " " + Hub.Quote(repliesJson));
            info.UseShellExecute = false;
            info.RedirectStandardOutput = true;
            process = Process.Start(info);
            string first = process.StandardOutput.ReadLine() ?? "";
            Assert.True(first.StartsWith("port "), "the scripted DPS did not start: <" + first + ">");
            Port = ushort.Parse(first.Substring(5));
        }

        public ushort Port { get; private set; }

        /// <summary>What the device sent (JSON: client_id, username, password, topics).</summary>
        public string Seen()
        {
            string line = process.StandardOutput.ReadLine() ?? "";
            Assert.True(line.StartsWith("seen "), "the scripted DPS ended without a report: <" + line + ">");
            return line.Substring(5);
        }

        public void Dispose()
        {
            Hub.Stop(process);
        }
    }

    public static class ProvisioningTests
    {
        private const string Scope = "0neFEEDC0DE";
        private const string Registration = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
        private const string GroupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

        private static TlsConfig Trust(params string[] caFiles)
        {
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            {
                foreach (string ca in caFiles)
                {
                    builder.AddCaFile(ca);
                }
                return builder.Build();
            }
        }

        [Test]
        public static void ProvisionPollsAfterRetryAfterAndReturnsTheAssignment()
        {
            string key = Dps.DeriveKey(GroupKey, Registration);
            using (DpsPeer dps = new DpsPeer(
                "[[202, 1, {\"operationId\": \"op-7\", \"status\": \"assigning\"}]," +
                " [200, null, {\"operationId\": \"op-7\", \"status\": \"assigned\", \"registrationState\":" +
                " {\"assignedHub\": \"hub-7.azure-devices.net\", \"deviceId\": \"sn-007\"}}]]"))
            using (TlsConfig tls = Trust(Hub.CaFile))
            {
                Stopwatch clock = Stopwatch.StartNew();
                DpsAssignment assigned = Dps.Provision(Scope, Registration, key, new DpsOptions
                {
                    Endpoint = "localhost", Port = dps.Port, GroupEnrollment = true, Tls = tls, TimeoutMilliseconds = 20000,
                });
                Assert.Equal("hub-7.azure-devices.net", assigned.AssignedHub, "assigned hub");
                Assert.Equal("sn-007", assigned.DeviceId, "device id");
                Assert.True(clock.ElapsedMilliseconds >= 1000, "waited DPS's retry-after of 1 s");
                string seen = dps.Seen();
                Assert.Contains("\"client_id\": \"" + Registration + "\"", seen, "MQTT client id");
                Assert.Contains("\"username\": \"" + Scope + "/registrations/" + Registration + "/api-version=", seen, "user name");
                Assert.Contains("skn=registration", seen, "a group enrollment's token names the key");
                Assert.Contains("sr=" + Scope + "%2Fregistrations%2F" + Registration, seen, "token resource");
                Assert.Contains("\"$dps/registrations/PUT/iotdps-register/?$rid=1\", " +
                    "\"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op-7\"", seen, "register, then poll");
            }
        }

        [Test]
        public static void ProvisionNamesTheRefusal()
        {
            using (DpsPeer dps = new DpsPeer(
                "[[401, null, {\"errorCode\": 401002, \"message\": \"The device is unauthorized to register.\"}]]"))
            using (TlsConfig tls = Trust(Hub.CaFile))
            {
                TetherException e = Assert.Fails(Result.NotAuthorized, () => Dps.Provision(Scope, Registration,
                    Dps.DeriveKey(GroupKey, Registration),
                    new DpsOptions { Endpoint = "localhost", Port = dps.Port, GroupEnrollment = true, Tls = tls, TimeoutMilliseconds = 20000 }),
                    "DPS refusal");
                Assert.Contains("unauthorized to register", e.Message, "DPS's text");
            }
        }

        [Test]
        public static void ProvisionChecksArgumentsFirst()
        {
            Assert.Throws<ArgumentNullException>(() => Dps.Provision(null, Registration, "a2V5"), "null scope");
            Assert.Throws<ArgumentNullException>(() => Dps.Provision(Scope, null, "a2V5"), "null registration id");
            // A malformed key is refused by the library before any connection (no DPS runs here).
            Assert.Fails(Result.SasKeyInvalid, () => Dps.Provision(Scope, Registration, "not base64!",
                new DpsOptions { Endpoint = "localhost", Port = 1, TimeoutMilliseconds = 2000 }), "bad key");
        }

        [Test]
        public static void CreateFromDpsProvisionsThenSendsToTheAssignedHub()
        {
            // test.sh registered "dps-device" in the stand-in with the key derived from GroupKey.
            string key = Dps.DeriveKey(GroupKey, Registration);
            using (DpsPeer dps = new DpsPeer(
                "[[200, null, {\"operationId\": \"op-1\", \"status\": \"assigned\", \"registrationState\":" +
                " {\"assignedHub\": \"localhost\", \"deviceId\": \"dps-device\"}}]]"))
            using (TlsConfig tls = Trust(Hub.CaFile, Hub.Setting("TETHER_TEST_STANDIN_CA")))
            using (DeviceClient client = DeviceClient.CreateFromDps(Scope, Registration, key,
                new DpsOptions { Endpoint = "localhost", Port = dps.Port, GroupEnrollment = true, TimeoutMilliseconds = 20000 },
                new ClientOptions { Port = ushort.Parse(Hub.Setting("TETHER_TEST_STANDIN_PORT")), Tls = tls }))
            {
                client.Open(30000);
                ulong id = client.SendEvent(System.Text.Encoding.UTF8.GetBytes("provisioned"));
                Assert.True(client.WaitForAcknowledgement(id, 10000), "the assigned hub acknowledged the message");
            }
            string log = File.ReadAllText(Hub.Setting("TETHER_TEST_STANDIN_LOG"));
            Assert.Contains("accepted \"dps-device\"", log, "the stand-in's log");
        }
    }
}
