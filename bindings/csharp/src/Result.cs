// Result codes, the exception that carries them, and the small enums of the C API.
using System;

namespace Tether
{
    /// <summary>Result codes of the C API (<c>tether_result</c>); values never change.</summary>
    public enum Result : int
    {
        Ok = 0,
        NullArgument = 1,
        InvalidUtf8 = 2,
        InvalidArgument = 3,
        BufferTooSmall = 4,
        Panic = 5,
        FileNotReadable = 6,
        InvalidState = 7,
        NotFound = 8,
        TlsVersionRefused = 100,
        TlsCipherSuiteRefused = 101,
        CertExpired = 102,
        CertNotYetValid = 103,
        CertWrongHost = 104,
        CertUntrusted = 105,
        ClientCertRequired = 106,
        CertMalformed = 107,
        PrivateKeyMalformed = 108,
        ClockNotSet = 109,
        TlsHandshakeFailed = 110,
        ClientCertRejected = 111,
        KeyCertMismatch = 112,
        SignerFailed = 113,
        CertInvalid = 114,
        SasKeyInvalid = 200,
        ConnectionStringInvalid = 201,
        TokenExpired = 202,
        TokenMalformed = 203,
        SignatureMismatch = 204,
        IdInvalid = 205,
        CertDeviceMismatch = 206,
        NotAuthorized = 207,
        DeviceDisabled = 208,
        MqttMalformed = 300,
        MqttNeedMoreData = 301,
        MqttPacketTooLarge = 302,
        MqttQosUnsupported = 303,
        MqttConnectionRefused = 304,
        TopicInvalid = 305,
        PropertyBagInvalid = 306,
        QueueFull = 307,
        Io = 400,
        Timeout = 401,
        DnsFailed = 402,
        ConnectFailed = 403,
        ConnectionClosed = 404,
        ProxyRefused = 405,
        ProxyAuthRequired = 406,
        WebsocketUpgradeFailed = 407,
        WebsocketProtocol = 408,
        Pkcs11ModuleNotFound = 500,
        Pkcs11ModuleInvalid = 501,
        Pkcs11UriInvalid = 502,
        Pkcs11TokenAbsent = 503,
        Pkcs11PinIncorrect = 504,
        Pkcs11PinLocked = 505,
        Pkcs11KeyNotFound = 506,
        Pkcs11KeyAmbiguous = 507,
        Pkcs11CertNotFound = 508,
        Pkcs11MechanismUnsupported = 509,
        Pkcs11TokenFailed = 510,
        Pkcs11Unavailable = 511,
    }

    /// <summary>A failed call: the result code and the library's message (never a secret).</summary>
    public class TetherException : Exception
    {
        /// <summary>The result code.</summary>
        public Result Result { get; }

        /// <summary>The C name of the code, e.g. <c>TETHER_RESULT_CERT_EXPIRED</c>.</summary>
        public string ResultName { get { return Library.ResultName(Result); } }

        public TetherException(Result result, string message)
            : base(message + " (" + Library.ResultName(result) + ")")
        {
            Result = result;
        }
    }

    /// <summary>Log levels of <see cref="Library.Log"/> (<c>TETHER_LOG_*</c>).</summary>
    public enum LogLevel : uint
    {
        Error = 1,
        Warn = 2,
        Info = 3,
        Debug = 4,
    }

    /// <summary>What a <see cref="DeviceClient"/> subscribes to (<c>TETHER_SUBSCRIBE_*</c>).</summary>
    [Flags]
    public enum Subscriptions : uint
    {
        CloudToDevice = 1,
        Methods = 2,
        Twin = 4,
        All = 7,
    }

    /// <summary>Kinds of events <see cref="DeviceClient.Poll(int)"/> returns (<c>tether_event_kind</c>).</summary>
    public enum EventKind : int
    {
        None = 0,
        Connected = 1,
        TelemetryAcknowledged = 2,
        CloudToDeviceMessage = 3,
        MethodRequest = 4,
        TwinResponse = 5,
        DesiredPropertiesPatch = 6,
        SubscriptionRefused = 7,
        Disconnected = 8,
        /// <summary>A message whose topic or properties could not be decoded, handed over raw:
        /// <see cref="ClientEvent.Description"/> is the topic, <see cref="ClientEvent.Message"/>
        /// the body (no properties), <see cref="ClientEvent.ConnectionStatus"/> the reason.</summary>
        Undecodable = 9,
    }

    /// <summary>Embedded trust anchors (<c>TETHER_ROOTS_*</c>).</summary>
    [Flags]
    public enum Roots : uint
    {
        None = 0,
        Rsa = 1,
        Ecc = 2,
    }

    /// <summary>How a connection string authenticates (<c>TETHER_AUTH_*</c>).</summary>
    public enum AuthKind : uint
    {
        SasKey = 1,
        SasToken = 2,
        X509 = 3,
    }

    /// <summary>Thumbprint digests (<c>TETHER_THUMBPRINT_*</c>).</summary>
    public enum ThumbprintAlgorithm : uint
    {
        Sha1 = 1,
        Sha256 = 2,
    }
}
