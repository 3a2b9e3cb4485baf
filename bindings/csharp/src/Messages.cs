// What the client hands to its handlers: copies of the native event data, valid forever.
using System;
using System.Collections.Generic;
using System.Text;

namespace Tether
{
    /// <summary>How a client reaches the hub (<c>TETHER_TRANSPORT_*</c>).</summary>
    public enum Transport : byte
    {
        /// <summary>MQTT over TLS on <see cref="ClientOptions.Port"/> (8883).</summary>
        Mqtt = 0,
        /// <summary>MQTT over WebSockets on <see cref="ClientOptions.WebSocketPort"/> (443).</summary>
        WebSockets = 1,
        /// <summary>MQTT, falling back to WebSockets when the MQTT port cannot be reached.</summary>
        Auto = 2,
    }

    /// <summary>
    /// Connection settings (<c>tether_client_options</c>); null fields keep the library's
    /// defaults (<see cref="Library.Defaults"/>).
    /// </summary>
    public sealed class ClientOptions
    {
        /// <summary>MQTT (default), WebSockets or Auto.</summary>
        public Transport? Transport { get; set; }
        /// <summary>TCP port of MQTT over WebSockets (IoT Hub: 443).</summary>
        public ushort? WebSocketPort { get; set; }
        /// <summary>
        /// HTTP proxy URL (<c>http://[user:password@]host[:port]</c>); null uses the environment's
        /// (<c>HTTPS_PROXY</c>...), an empty string connects directly.
        /// </summary>
        public string Proxy { get; set; }
        /// <summary>TCP port (default 8883, IoT Hub's MQTT port).</summary>
        public ushort? Port { get; set; }
        /// <summary>MQTT keep-alive in seconds (default 60, at most 1177).</summary>
        public ushort? KeepAliveSeconds { get; set; }
        /// <summary>Lifetime of the SAS tokens the client makes, seconds (default 3600, at least 10).</summary>
        public uint? TokenTimeToLiveSeconds { get; set; }
        /// <summary>Most unacknowledged QoS 1 messages (default 128).</summary>
        public uint? MaxInflight { get; set; }
        /// <summary>TCP connect and TLS + CONNACK timeout, milliseconds (default 30000).</summary>
        public uint? ConnectTimeoutMilliseconds { get; set; }
        /// <summary>Largest delay between reconnection attempts, milliseconds (default 60000).</summary>
        public uint? RetryMaxMilliseconds { get; set; }
        /// <summary>The TLS policy (needed for X.509 and extra CAs); null for the IoT Hub defaults.</summary>
        public TlsConfig Tls { get; set; }
    }

    /// <summary>A cloud-to-device message.</summary>
    public sealed class Message
    {
        internal Message(byte[] body, IDictionary<string, string> properties)
        {
            Body = body;
            Properties = properties;
        }

        /// <summary>The message body.</summary>
        public byte[] Body { get; private set; }

        /// <summary>
        /// Application and system properties (<c>$.mid</c>, <c>$.to</c>...), decoded; a property
        /// sent without a value maps to null.
        /// </summary>
        public IDictionary<string, string> Properties { get; private set; }

        /// <summary>The body as UTF-8 text.</summary>
        public string GetBodyAsString()
        {
            return Encoding.UTF8.GetString(Body);
        }
    }

    /// <summary>A direct-method request; answer it with <see cref="DeviceClient.RespondToMethod"/>.</summary>
    public sealed class MethodRequest
    {
        internal MethodRequest(string name, string requestId, byte[] data)
        {
            Name = name;
            RequestId = requestId;
            Data = data;
        }

        public string Name { get; private set; }
        public string RequestId { get; private set; }
        public byte[] Data { get; private set; }

        /// <summary>The payload as UTF-8 (JSON) text.</summary>
        public string DataAsJson
        {
            get { return Encoding.UTF8.GetString(Data); }
        }
    }

    /// <summary>What a method handler answers: a status and a JSON body (null for none).</summary>
    public sealed class MethodResponse
    {
        public MethodResponse(int status, string json)
        {
            Status = status;
            Json = json;
        }

        public int Status { get; private set; }
        public string Json { get; private set; }
    }

    /// <summary>The answer to a twin GET or reported-properties PATCH.</summary>
    public sealed class TwinResponse
    {
        internal TwinResponse(string requestId, int status, ulong version, byte[] body)
        {
            RequestId = requestId;
            Status = status;
            Version = version;
            Body = body;
        }

        public string RequestId { get; private set; }
        /// <summary>200 (GET), 204 (PATCH accepted), 429, 5xx...</summary>
        public int Status { get; private set; }
        /// <summary>The twin version (0 if none was given).</summary>
        public ulong Version { get; private set; }
        public byte[] Body { get; private set; }

        /// <summary>The body as UTF-8 (JSON) text.</summary>
        public string Json
        {
            get { return Encoding.UTF8.GetString(Body); }
        }
    }

    /// <summary>A desired-properties patch.</summary>
    public sealed class DesiredPropertiesPatch
    {
        internal DesiredPropertiesPatch(ulong version, byte[] body)
        {
            Version = version;
            Body = body;
        }

        public ulong Version { get; private set; }
        public byte[] Body { get; private set; }

        public string Json
        {
            get { return Encoding.UTF8.GetString(Body); }
        }
    }

    /// <summary>Why a connection ended.</summary>
    public sealed class ConnectionStatus
    {
        internal ConnectionStatus(Result reason, string message, bool willRetry)
        {
            Reason = reason;
            Message = message;
            WillRetry = willRetry;
        }

        /// <summary><see cref="Result.Ok"/> when requested or for a token renewal.</summary>
        public Result Reason { get; private set; }
        public string Message { get; private set; }
        /// <summary>Whether the client reconnects by itself on later polls.</summary>
        public bool WillRetry { get; private set; }
    }

    /// <summary>
    /// Certificate renewal progress (clients from <see cref="DeviceClient.CreateFromCredentials"/>):
    /// <see cref="Kind"/> is <c>renewal_requested</c>, <c>issued</c>, <c>swapped</c> (the renewed
    /// certificate is in force and stored), <c>rolled_back</c> (the hub refused it; the previous
    /// one is back) or <c>renewal_failed</c>.
    /// </summary>
    public sealed class CertificateStatus
    {
        internal CertificateStatus(string kind, ulong notAfter, Result reason, string message, bool willRetry,
            string requestId)
        {
            Kind = kind;
            NotAfterUnixSeconds = notAfter;
            Reason = reason;
            Message = message;
            WillRetry = willRetry;
            RequestId = requestId;
        }

        public string Kind { get; private set; }
        /// <summary>issued, swapped: the new certificate's end of validity (Unix seconds).</summary>
        public ulong NotAfterUnixSeconds { get; private set; }
        /// <summary>rolled_back, renewal_failed: why.</summary>
        public Result Reason { get; private set; }
        public string Message { get; private set; }
        /// <summary>renewal_failed: whether the client tries again by itself.</summary>
        public bool WillRetry { get; private set; }
        /// <summary>renewal_requested: the request id.</summary>
        public string RequestId { get; private set; }
    }

    /// <summary>One event from <see cref="DeviceClient.Poll(int)"/>; only the fields of its kind are set.</summary>
    public sealed class ClientEvent
    {
        public EventKind Kind { get; internal set; }
        /// <summary>TelemetryAcknowledged: the id <see cref="DeviceClient.SendEvent(byte[], IDictionary{string,string}, string, string, int)"/> returned.</summary>
        public ulong MessageId { get; internal set; }
        /// <summary>Connected: the TLS version and suite; SubscriptionRefused: the filter.</summary>
        public string Description { get; internal set; }
        public Message Message { get; internal set; }
        public MethodRequest MethodRequest { get; internal set; }
        public TwinResponse TwinResponse { get; internal set; }
        public DesiredPropertiesPatch DesiredProperties { get; internal set; }
        public ConnectionStatus ConnectionStatus { get; internal set; }
        /// <summary>Certificate: the renewal progress.</summary>
        public CertificateStatus Certificate { get; internal set; }
    }
}
