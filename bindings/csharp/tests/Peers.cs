// The local hub and its "service" side: mosquitto configured like IoT Hub (started by
// test.sh), with mosquitto_sub / mosquitto_pub playing the service.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading;

namespace Tether.Tests
{
    public static class Hub
    {
        public const string Device = "dev-1";
        public const string Key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

        public static string Setting(string name)
        {
            string value = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(value))
            {
                throw new AssertionException(name + " is not set: run the tests with bindings/csharp/test.sh, which starts the local hub");
            }
            return value;
        }

        public static ushort Port { get { return ushort.Parse(Setting("TETHER_TEST_PORT")); } }
        public static string CaFile { get { return Setting("TETHER_TEST_CA"); } }
        public static string Token { get { return Setting("TETHER_TEST_TOKEN"); } }
        public static string ServicePassword { get { return Setting("TETHER_TEST_SERVICE_PASSWORD"); } }

        public static string ConnectionString
        {
            get { return "HostName=localhost;DeviceId=" + Device + ";SharedAccessSignature=" + Token; }
        }

        /// <summary>A client for the local hub (not opened).</summary>
        public static DeviceClient Client()
        {
            return Client(ConnectionString);
        }

        public static DeviceClient Client(string connectionString)
        {
            using (TlsConfigBuilder builder = new TlsConfigBuilder())
            using (TlsConfig tls = builder.AddCaFile(CaFile).Build())
            {
                return DeviceClient.CreateFromConnectionString(connectionString, new ClientOptions
                {
                    Port = Port,
                    Tls = tls,
                    RetryMaxMilliseconds = 1000,
                });
            }
        }

        /// <summary>Polls until <paramref name="done"/> holds; fails after the timeout.</summary>
        public static void PollUntil(DeviceClient client, Func<bool> done, int timeoutMs, string what)
        {
            Stopwatch clock = Stopwatch.StartNew();
            while (!done())
            {
                Assert.True(clock.ElapsedMilliseconds < timeoutMs, "timed out waiting for " + what);
                client.Poll(100);
            }
        }

        public static void Require(string tool, string package)
        {
            foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
            {
                if (dir.Length > 0 && File.Exists(Path.Combine(dir, tool)))
                {
                    return;
                }
            }
            throw new AssertionException("`" + tool + "` is not installed: install it with `apt-get install -y " + package + "`");
        }

        /// <summary>Publishes as the service (QoS 1) and waits for mosquitto_pub to finish.</summary>
        public static void Publish(string topic, string payload)
        {
            Require("mosquitto_pub", "mosquitto-clients");
            ProcessStartInfo info = new ProcessStartInfo("mosquitto_pub",
                "-h localhost -p " + Port + " --cafile " + Quote(CaFile) + " -u service -P " + Quote(ServicePassword) +
                " -q 1 -t " + Quote(topic) + " -m " + Quote(payload));
            info.UseShellExecute = false;
            info.RedirectStandardError = true;
            using (Process p = Process.Start(info))
            {
                string err = p.StandardError.ReadToEnd();
                Assert.True(p.WaitForExit(10000), "mosquitto_pub did not finish");
                Assert.Equal(0, p.ExitCode, "mosquitto_pub exit code (" + err.Trim() + ")");
            }
        }

        /// <summary>Kills a helper process (if it still runs), waits for it and frees it.</summary>
        internal static void Stop(Process process)
        {
            try
            {
                if (!process.HasExited)
                {
                    process.Kill();
                }
                process.WaitForExit(5000);
            }
            catch (InvalidOperationException)
            {
            }
            process.Dispose();
        }

        internal static string Quote(string s)
        {
            return "'" + s.Replace("'", "'\\''") + "'";
        }
    }

    /// <summary>mosquitto_sub as the service, collecting <c>topic payload</c> lines.</summary>
    public sealed class Subscriber : IDisposable
    {
        private static int counter;
        private readonly Process process;
        private readonly BlockingCollection<string> lines = new BlockingCollection<string>();
        private readonly List<string> seen = new List<string>();

        public Subscriber(string filter)
        {
            Hub.Require("mosquitto_sub", "mosquitto-clients");
            Hub.Require("stdbuf", "coreutils");
            ProcessStartInfo info = new ProcessStartInfo("stdbuf",
                "-oL mosquitto_sub -h localhost -p " + Hub.Port + " --cafile " + Hub.Quote(Hub.CaFile) +
                " -u service -P " + Hub.Quote(Hub.ServicePassword) + " -q 1 -v -d -i service-sub-" +
                Interlocked.Increment(ref counter) + " -t " + Hub.Quote(filter));
            info.UseShellExecute = false;
            info.RedirectStandardOutput = true;
            info.RedirectStandardError = true;
            process = new Process();
            process.StartInfo = info;
            process.OutputDataReceived += (sender, e) =>
            {
                if (e.Data != null)
                {
                    lines.Add(e.Data);
                }
            };
            process.Start();
            process.BeginOutputReadLine();
            // mosquitto_sub -d prints "received SUBACK" once subscribed.
            Assert.True(WaitFor(l => l.Contains("received SUBACK"), 10000) != null,
                "mosquitto_sub did not subscribe: " + string.Join(" | ", seen));
        }

        /// <summary>The first line matching <paramref name="match"/> within the timeout, or null.</summary>
        public string WaitFor(Func<string, bool> match, int timeoutMs)
        {
            Stopwatch clock = Stopwatch.StartNew();
            while (true)
            {
                long left = timeoutMs - clock.ElapsedMilliseconds;
                string line;
                if (left <= 0 || !lines.TryTake(out line, (int)left))
                {
                    return null;
                }
                seen.Add(line);
                if (match(line))
                {
                    return line;
                }
            }
        }

        public void Dispose()
        {
            Hub.Stop(process);
        }
    }
}
