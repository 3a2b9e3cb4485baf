// Receives cloud-to-device messages, answers direct methods and reports a property, printing
// each event, until SECONDS have passed or EVENTS events were handled. Handlers run inside
// Poll, on this thread.
//   TETHER_CONNECTION_STRING=... [TETHER_CA_FILE=ca.pem] [TETHER_PORT=8883] mono C2dMethodsTwin.exe [EVENTS] [SECONDS]
using System;
using System.Diagnostics;
using Tether;

public static class C2dMethodsTwin
{
    public static int Main(string[] args)
    {
        int maxEvents = args.Length > 0 ? int.Parse(args[0]) : int.MaxValue;
        int seconds = args.Length > 1 ? int.Parse(args[1]) : 60;
        int handled = 0;
        try
        {
            using (DeviceClient client = DeviceClient.CreateFromEnvironment())
            {
                client.MessageReceived += m =>
                {
                    Console.WriteLine("c2d " + m.GetBodyAsString());
                    foreach (var p in m.Properties)
                    {
                        Console.WriteLine("  " + p.Key + "=" + p.Value);
                    }
                    handled++;
                };
                client.SetMethodDefaultHandler(r =>
                {
                    Console.WriteLine("method " + r.Name + " " + r.DataAsJson);
                    handled++;
                    return new MethodResponse(200, "{\"method\":\"" + r.Name + "\"}");
                });
                client.DesiredPropertiesUpdated += p =>
                {
                    Console.WriteLine("desired v" + p.Version + " " + p.Json);
                    handled++;
                };
                client.TwinResponseReceived += r => Console.WriteLine("twin " + r.Status + " " + r.Json);
                client.Subscribe(Subscriptions.CloudToDevice | Subscriptions.Twin);
                client.Open(30000);
                client.RequestUpdateReportedProperties("{\"example\":\"c2d_methods_twin\"}");
                client.Poll(300);
                Console.WriteLine("ready");
                Stopwatch clock = Stopwatch.StartNew();
                while (handled < maxEvents && clock.Elapsed.TotalSeconds < seconds)
                {
                    client.Poll(500);
                }
                client.Close();
            }
            return 0;
        }
        catch (TetherException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 1;
        }
    }
}
