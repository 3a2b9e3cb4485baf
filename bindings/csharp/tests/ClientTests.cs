// End to end against the local hub (mosquitto configured like IoT Hub, started by test.sh),
// with mosquitto_sub / mosquitto_pub as the service.
using System;
using System.Collections.Generic;
using System.Threading;

namespace Tether.Tests
{
    public static class ClientTests
    {
        const string Events = "devices/" + Hub.Device + "/messages/events/";

        [Test]
        public static void TelemetryWithPropertiesReachesTheServiceAndIsAcknowledged()
        {
            using (Subscriber service = new Subscriber(Events + "#"))
            using (DeviceClient client = Hub.Client())
            {
                List<ulong> acked = new List<ulong>();
                client.TelemetryAcknowledged += n => acked.Add(n);
                client.Open(10000);

                Dictionary<string, string> props = new Dictionary<string, string>();
                props["unit"] = "C";
                props["site"] = "hall 7/a";
                ulong id = client.SendEvent("{\"temperature\":21.5}", props);
                Assert.True(client.WaitForAcknowledgement(id, 10000), "acknowledged");
                Assert.True(acked.Contains(id), "TelemetryAcknowledged raised with the id");
                Assert.Equal(0, client.Inflight, "nothing in flight");

                string line = service.WaitFor(l => l.StartsWith(Events, StringComparison.Ordinal), 10000);
                Assert.True(line != null, "the service received the message");
                int space = line.IndexOf(' ');
                string topic = line.Substring(0, space);
                Assert.Equal("{\"temperature\":21.5}", line.Substring(space + 1), "payload");
                Assert.Contains("unit=C", topic, "topic");
                Assert.Contains("site=hall%207%2Fa", topic, "topic");
                Assert.Contains("%24.ct=application%2Fjson", topic.Replace("$.ct", "%24.ct"), "topic");
                Assert.Contains(".ce=utf-8", topic, "topic");

                ulong binary = client.SendEvent(new byte[] { 0, 1, 2, 255 }, null, null, null, 1);
                Assert.True(binary > id, "ids increase");
                Assert.True(client.WaitForAcknowledgement(binary, 10000), "binary message acknowledged");
                client.Close();
                client.Close();
            }
        }

        [Test]
        public static void RefusedCredentialsThrowNotAuthorized()
        {
            string wrong = Sas.Token("localhost/devices/" + Hub.Device, Hub.Key, null,
                (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1234);
            using (DeviceClient client = Hub.Client("HostName=localhost;DeviceId=" + Hub.Device + ";SharedAccessSignature=" + wrong))
            {
                TetherException e = Assert.Fails(Result.NotAuthorized, () => client.Open(10000), "wrong token");
                Assert.True(!e.Message.Contains("sig="), "the message does not leak the token: " + e.Message);
            }
        }

        [Test]
        public static void UntrustedServerIsRefusedByTheTlsPolicy()
        {
            // Only the embedded IoT Hub roots: the local CA is not trusted.
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(Hub.ConnectionString,
                new ClientOptions { Port = Hub.Port }))
            {
                Assert.Fails(Result.CertUntrusted, () => client.Open(10000), "untrusted server");
            }
        }

        [Test]
        public static void LogLinesReachTheStaticEvent()
        {
            List<string> lines = new List<string>();
            Action<LogLevel, string> handler = (level, line) =>
            {
                if (level <= LogLevel.Info)
                {
                    lines.Add(line);
                }
            };
            Library.LogLevel = LogLevel.Debug;
            Library.Log += handler;
            try
            {
                using (DeviceClient client = Hub.Client())
                {
                    client.Open(10000);
                }
            }
            finally
            {
                Library.Log -= handler;
                Library.LogLevel = LogLevel.Info;
            }
            Assert.True(lines.Count > 0, "log lines during Open");
            Assert.True(lines.Exists(l => l.Contains("TLS")), "a line names TLS: " + string.Join(" | ", lines));
            Assert.True(!lines.Exists(l => l.Contains("sig=")), "no token in the log");
            int count = lines.Count;
            using (DeviceClient client = Hub.Client())
            {
                client.Open(10000);
            }
            Assert.Equal(count, lines.Count, "no lines after the handler is removed");
        }

        [Test]
        public static void CloudToDeviceMessagesArriveWithTheirProperties()
        {
            using (DeviceClient client = Hub.Client())
            {
                List<Message> received = new List<Message>();
                client.MessageReceived += m => received.Add(m);
                client.Open(10000);
                client.Subscribe(Subscriptions.CloudToDevice);
                client.Poll(300);
                // The subscription has no acknowledgement event: publish again until it is in place.
                for (int attempt = 0; attempt < 5 && received.Count == 0; attempt++)
                {
                    Hub.Publish("devices/" + Hub.Device + "/messages/devicebound/%24.mid=m-1&color=blue%20green&flag", "hello device");
                    try
                    {
                        Hub.PollUntil(client, () => received.Count > 0, 2000, "C2D");
                    }
                    catch (AssertionException)
                    {
                    }
                }
                Assert.True(received.Count > 0, "a C2D message arrived");
                Message m0 = received[0];
                Assert.Equal("hello device", m0.GetBodyAsString(), "body");
                Assert.Equal("blue green", m0.Properties["color"], "decoded property");
                Assert.Equal("m-1", m0.Properties["$.mid"], "system property");
                Assert.True(m0.Properties.ContainsKey("flag") && m0.Properties["flag"] == null, "a bare key maps to null");
            }
        }

        [Test]
        public static void MethodRequestsAreAnsweredByHandlers()
        {
            using (Subscriber service = new Subscriber("$iothub/methods/res/#"))
            using (DeviceClient client = Hub.Client())
            {
                List<MethodRequest> calls = new List<MethodRequest>();
                List<MethodRequest> unhandled = new List<MethodRequest>();
                client.SetMethodHandler("reboot", r =>
                {
                    calls.Add(r);
                    return new MethodResponse(200, "{\"done\":true}");
                });
                client.MethodRequested += r =>
                {
                    unhandled.Add(r);
                    client.RespondToMethod(r.RequestId, 404, "{\"error\":\"no such method\"}");
                };
                client.Open(10000);
                client.Poll(300);
                for (int attempt = 0; attempt < 5 && calls.Count == 0; attempt++)
                {
                    Hub.Publish("$iothub/methods/POST/reboot/?$rid=42", "{\"delay\":1}");
                    try
                    {
                        Hub.PollUntil(client, () => calls.Count > 0, 2000, "method call");
                    }
                    catch (AssertionException)
                    {
                    }
                }
                Assert.True(calls.Count > 0, "the handler ran");
                Assert.Equal("reboot", calls[0].Name, "name");
                Assert.Equal("42", calls[0].RequestId, "request id");
                Assert.Equal("{\"delay\":1}", calls[0].DataAsJson, "payload");
                string answer = service.WaitFor(l => l.StartsWith("$iothub/methods/res/", StringComparison.Ordinal), 10000);
                Assert.Equal("$iothub/methods/res/200/?$rid=42 {\"done\":true}", answer, "response seen by the service");

                Hub.Publish("$iothub/methods/POST/selfDestruct/?$rid=43", "{}");
                Hub.PollUntil(client, () => unhandled.Count > 0, 10000, "unhandled method");
                Assert.Equal("selfDestruct", unhandled[0].Name, "unhandled name");
                answer = service.WaitFor(l => l.StartsWith("$iothub/methods/res/", StringComparison.Ordinal), 10000);
                Assert.Equal("$iothub/methods/res/404/?$rid=43 {\"error\":\"no such method\"}", answer, "404 seen by the service");
            }
        }

        /// <summary>The service answers the first request on <paramref name="filter"/> with status (and version).</summary>
        static Thread Answer(Subscriber service, string prefix, string status, string payload, List<string> requests)
        {
            Thread t = new Thread(() =>
            {
                try
                {
                    string line = service.WaitFor(l => l.StartsWith(prefix, StringComparison.Ordinal), 10000);
                    if (line == null)
                    {
                        return;
                    }
                    lock (requests)
                    {
                        requests.Add(line);
                    }
                    string topic = line.Split(' ')[0];
                    string rid = topic.Substring(topic.IndexOf("$rid=", StringComparison.Ordinal) + 5);
                    Hub.Publish("$iothub/twin/res/" + status + "/?$rid=" + rid, payload);
                }
                catch (Exception e)
                {
                    lock (requests)
                    {
                        requests.Add("service failed: " + e.Message);
                    }
                }
            });
            t.IsBackground = true;
            t.Start();
            return t;
        }

        [Test]
        public static void TwinGetAndReportedPatchAreAnswered()
        {
            using (Subscriber service = new Subscriber("$iothub/twin/#"))
            using (DeviceClient client = Hub.Client())
            {
                client.Open(10000);
                client.Subscribe(Subscriptions.Twin);
                client.Poll(300);

                List<string> requests = new List<string>();
                Thread t = Answer(service, "$iothub/twin/GET/", "200", "{\"desired\":{\"fan\":true,\"$version\":3},\"reported\":{}}", requests);
                TwinResponse twin = client.GetTwin(10000);
                t.Join();
                Assert.Equal(1, requests.Count, "one GET seen by the service");
                Assert.Contains("$iothub/twin/GET/?$rid=" + twin.RequestId, requests[0], "GET topic");
                Assert.Equal(200, twin.Status, "status");
                Assert.Contains("\"fan\":true", twin.Json, "document");

                requests.Clear();
                t = Answer(service, "$iothub/twin/PATCH/properties/reported/", "204", "", requests);
                TwinResponse patched = null;
                string rid = client.RequestUpdateReportedProperties("{\"firmware\":\"1.2.3\"}");
                t.Join();
                Assert.Equal(1, requests.Count, "one PATCH seen by the service");
                Assert.Equal("$iothub/twin/PATCH/properties/reported/?$rid=" + rid + " {\"firmware\":\"1.2.3\"}", requests[0], "PATCH");
                client.TwinResponseReceived += r =>
                {
                    if (r.RequestId == rid)
                    {
                        patched = r;
                    }
                };
                Hub.PollUntil(client, () => patched != null, 10000, "PATCH answer");
                Assert.Equal(204, patched.Status, "PATCH status");
            }
        }

        [Test]
        public static void ReportedPatchAnswerCarriesTheVersion()
        {
            using (Subscriber service = new Subscriber("$iothub/twin/PATCH/#"))
            using (DeviceClient client = Hub.Client())
            {
                client.Open(10000);
                client.Subscribe(Subscriptions.Twin);
                client.Poll(300);
                List<string> requests = new List<string>();
                Thread t = new Thread(() =>
                {
                    string line = service.WaitFor(l => l.StartsWith("$iothub/twin/PATCH/properties/reported/", StringComparison.Ordinal), 10000);
                    if (line != null)
                    {
                        string topic = line.Split(' ')[0];
                        string rid = topic.Substring(topic.IndexOf("$rid=", StringComparison.Ordinal) + 5);
                        lock (requests) requests.Add(line);
                        Hub.Publish("$iothub/twin/res/204/?$rid=" + rid + "&$version=5", "");
                    }
                });
                t.IsBackground = true;
                t.Start();
                TwinResponse r = client.UpdateReportedProperties("{\"temp\":1}", 10000);
                t.Join();
                Assert.Equal(204, r.Status, "status");
                Assert.Equal(5UL, r.Version, "version");
            }
        }

        [Test]
        public static void DesiredPropertyPatchesAreRaised()
        {
            using (DeviceClient client = Hub.Client())
            {
                List<DesiredPropertiesPatch> patches = new List<DesiredPropertiesPatch>();
                client.DesiredPropertiesUpdated += p => patches.Add(p);
                client.Open(10000);
                client.Subscribe(Subscriptions.Twin);
                client.Poll(300);
                for (int attempt = 0; attempt < 5 && patches.Count == 0; attempt++)
                {
                    Hub.Publish("$iothub/twin/PATCH/properties/desired/?$version=7", "{\"fan\":false,\"$version\":7}");
                    try
                    {
                        Hub.PollUntil(client, () => patches.Count > 0, 2000, "desired patch");
                    }
                    catch (AssertionException)
                    {
                    }
                }
                Assert.True(patches.Count > 0, "a patch arrived");
                Assert.Equal(7UL, patches[0].Version, "version");
                Assert.Equal("{\"fan\":false,\"$version\":7}", patches[0].Json, "patch");
            }
        }

        [Test]
        public static void TwinRequestsNeedAConnection()
        {
            using (DeviceClient client = Hub.Client())
            {
                Assert.Fails(Result.InvalidState, () => client.RequestTwin(), "twin before Open");
                Assert.Fails(Result.InvalidState, () => client.SendEvent(new byte[] { 1 }, null, null, null, 0), "QoS 0 while disconnected");
                Assert.Fails(Result.MqttQosUnsupported, () => client.SendEvent(new byte[] { 1 }, null, null, null, 2), "QoS 2");
            }
        }
    }
}
