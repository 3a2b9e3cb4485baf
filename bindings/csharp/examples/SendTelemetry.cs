// Sends a few telemetry messages and waits for each acknowledgement.
//   TETHER_CONNECTION_STRING=... [TETHER_CA_FILE=ca.pem] [TETHER_PORT=8883] mono SendTelemetry.exe [COUNT]
using System;
using System.Collections.Generic;
using Tether;

public static class SendTelemetry
{
    public static int Main(string[] args)
    {
        int count = args.Length > 0 ? int.Parse(args[0]) : 3;
        try
        {
            using (DeviceClient client = DeviceClient.CreateFromEnvironment())
            {
                client.Connected += tls => Console.WriteLine("connected: " + tls);
                client.Open(30000);
                for (int i = 0; i < count; i++)
                {
                    Dictionary<string, string> properties = new Dictionary<string, string>();
                    properties["sequence"] = i.ToString();
                    ulong id = client.SendEvent("{\"temperature\":" + (20 + i) + "}", properties);
                    if (!client.WaitForAcknowledgement(id, 10000))
                    {
                        Console.Error.WriteLine("message " + id + " was not acknowledged");
                        return 1;
                    }
                    Console.WriteLine("sent " + id);
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
