// MQTT over WebSockets through a real HTTP proxy (tinyproxy with Basic credentials, started by
// test.sh) to the local IoT Hub stand-in's WebSocket listener (`tether hub --ws-port`).
using System;
using System.IO;

namespace Tether.Tests
{
    public static class WebSocketTests
    {
        static DeviceClient StandInClient(string proxy, Transport transport)
        {
            string cs = "HostName=localhost;DeviceId=dps-device;SharedAccessKey=" + Hub.Setting("TETHER_TEST_STANDIN_KEY");
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            using (TlsConfig tls = builder.AddCaFile(Hub.Setting("TETHER_TEST_STANDIN_CA")).Build())
            {
                return DeviceClient.CreateFromConnectionString(cs, new ClientOptions
                {
                    Transport = transport,
                    WebSocketPort = ushort.Parse(Hub.Setting("TETHER_TEST_STANDIN_WS_PORT")),
                    // Nothing listens on this MQTT port: Auto must fall back.
                    Port = 1,
                    Proxy = proxy,
                    Tls = tls,
                    RetryMaxMilliseconds = 1000,
                });
            }
        }

        [Test]
        public static void TelemetryAndTwinGoOverWebSocketsThroughAProxy()
        {
            using (DeviceClient client = StandInClient(Hub.Setting("TETHER_TEST_PROXY_URL"), Transport.WebSockets))
            {
                client.Open(20000);
                ulong id = client.SendEvent("{\"over\":\"websockets\"}");
                Assert.True(client.WaitForAcknowledgement(id, 10000), "acknowledged by the stand-in");
                client.Subscribe(Subscriptions.Twin);
                TwinResponse twin = client.GetTwin(20000);
                Assert.Equal(200, twin.Status, "twin status");
                Assert.Contains("\"desired\"", twin.Json, "twin document");
            }
            string log = File.ReadAllText(Hub.Setting("TETHER_TEST_PROXY_LOG"));
            Assert.Contains("CONNECT localhost:" + Hub.Setting("TETHER_TEST_STANDIN_WS_PORT"), log, "the proxy carried it");
        }

        [Test]
        public static void AutoFallsBackAndAProxyRefusalIsNamed()
        {
            using (DeviceClient client = StandInClient("", Transport.Auto))
            {
                client.Open(20000);
                ulong id = client.SendEvent("{\"fell\":\"back\"}");
                Assert.True(client.WaitForAcknowledgement(id, 10000), "acknowledged over WebSockets");
            }
            string wrong = Hub.Setting("TETHER_TEST_PROXY_URL").Replace("cs-proxy-pass", "wrong-pass");
            using (DeviceClient client = StandInClient(wrong, Transport.WebSockets))
            {
                TetherException e = Assert.Throws<TetherException>(() => client.Open(10000), "wrong proxy credentials");
                Assert.Equal(Result.ProxyAuthRequired, e.Result, "result");
                Assert.True(!e.Message.Contains("wrong-pass"), "the password is not in the message: " + e.Message);
            }
            Assert.Throws<TetherException>(() => StandInClient("ftp://nope", Transport.WebSockets), "a malformed proxy URL");
        }
    }
}
