// Result codes, the exception that carries them, and the small enums of the C API.
using System;

namespace Tether
{
    // The members below are generated from the one table of result codes (the Code enum in
    // src/error.rs) by tests/header.rs: refresh them with TETHER_BLESS=1 cargo test --test header.
    /// <summary>Result codes of the C API (<c>tether_result</c>); values never change.</summary>
    public enum Result : int
    {
        /// <summary>The call succeeded.</summary>
        Ok = 0,
        /// <summary>A required pointer argument was NULL.</summary>
        NullArgument = 1,
        /// <summary>A text argument was not valid UTF-8.</summary>
        InvalidUtf8 = 2,
        /// <summary>An argument had a value outside what the function accepts.</summary>
        InvalidArgument = 3,
        /// <summary>The output buffer is too small; <c>*out_len</c> holds the size needed (without the NUL).</summary>
        BufferTooSmall = 4,
        /// <summary>A panic was caught at the library boundary: this is a bug in tether; please report it.</summary>
        Panic = 5,
        /// <summary>A file could not be read.</summary>
        FileNotReadable = 6,
        /// <summary>The object is not in a state that allows this call.</summary>
        InvalidState = 7,
        /// <summary>The requested item does not exist.</summary>
        NotFound = 8,
        /// <summary>The server only offers a TLS version older than the policy allows (TLS 1.0/1.1).</summary>
        TlsVersionRefused = 100,
        /// <summary>The server chose, or only offers, a cipher suite outside the IoT Hub policy.</summary>
        TlsCipherSuiteRefused = 101,
        /// <summary>A certificate in the chain has expired.</summary>
        CertExpired = 102,
        /// <summary>A certificate in the chain is not valid yet.</summary>
        CertNotYetValid = 103,
        /// <summary>The server certificate is for another host name.</summary>
        CertWrongHost = 104,
        /// <summary>The server chain does not end in a trusted root.</summary>
        CertUntrusted = 105,
        /// <summary>The server requires a client certificate (mutual TLS) and none is configured.</summary>
        ClientCertRequired = 106,
        /// <summary>Certificate input (PEM or DER) is malformed.</summary>
        CertMalformed = 107,
        /// <summary>Private key input is malformed or of an unsupported type.</summary>
        PrivateKeyMalformed = 108,
        /// <summary>The device clock is not set (it reads a date before 2025-01-01).</summary>
        ClockNotSet = 109,
        /// <summary>The TLS handshake failed for another reason (the message says which).</summary>
        TlsHandshakeFailed = 110,
        /// <summary>The server refused our client certificate.</summary>
        ClientCertRejected = 111,
        /// <summary>The private key does not match the certificate.</summary>
        KeyCertMismatch = 112,
        /// <summary>A caller-supplied signing callback failed.</summary>
        SignerFailed = 113,
        /// <summary>A certificate is otherwise invalid (bad signature, wrong usage, revoked...).</summary>
        CertInvalid = 114,
        /// <summary>A SAS key is not valid base64 or is empty.</summary>
        SasKeyInvalid = 200,
        /// <summary>A connection string is malformed or inconsistent.</summary>
        ConnectionStringInvalid = 201,
        /// <summary>A SAS token has expired.</summary>
        TokenExpired = 202,
        /// <summary>A SAS token is malformed.</summary>
        TokenMalformed = 203,
        /// <summary>A SAS token's signature does not match the key.</summary>
        SignatureMismatch = 204,
        /// <summary>A device, module or registration id is empty or has characters IoT Hub refuses.</summary>
        IdInvalid = 205,
        /// <summary>The certificate's common name is not the configured device id.</summary>
        CertDeviceMismatch = 206,
        /// <summary>The hub refused the credentials (bad user name or password, CONNACK 4/5).</summary>
        NotAuthorized = 207,
        /// <summary>The device identity is disabled.</summary>
        DeviceDisabled = 208,
        /// <summary>An MQTT packet is malformed.</summary>
        MqttMalformed = 300,
        /// <summary>More bytes are needed to decode a complete packet.</summary>
        MqttNeedMoreData = 301,
        /// <summary>A packet exceeds the size IoT Hub allows.</summary>
        MqttPacketTooLarge = 302,
        /// <summary>QoS 2 is not supported by IoT Hub.</summary>
        MqttQosUnsupported = 303,
        /// <summary>The broker refused the connection (CONNACK return code in the message).</summary>
        MqttConnectionRefused = 304,
        /// <summary>A topic is malformed or is not an IoT Hub topic of the expected kind.</summary>
        TopicInvalid = 305,
        /// <summary>A property bag is malformed.</summary>
        PropertyBagInvalid = 306,
        /// <summary>The bounded in-flight queue is full.</summary>
        QueueFull = 307,
        /// <summary>An operating-system I/O error.</summary>
        Io = 400,
        /// <summary>The operation timed out.</summary>
        Timeout = 401,
        /// <summary>The host name could not be resolved.</summary>
        DnsFailed = 402,
        /// <summary>The TCP connection was refused or could not be established.</summary>
        ConnectFailed = 403,
        /// <summary>The peer closed the connection.</summary>
        ConnectionClosed = 404,
        /// <summary>The HTTP proxy refused the CONNECT tunnel (403 and other 4xx refusals; the message holds its status line). A proxy that cannot reach the hub (5xx, such as 502) is reported as <c>ConnectFailed</c>, which is retried.</summary>
        ProxyRefused = 405,
        /// <summary>The HTTP proxy needs credentials, or refused the ones given (407).</summary>
        ProxyAuthRequired = 406,
        /// <summary>The server did not accept the WebSocket upgrade as IoT Hub does: an HTTP refusal, no <c>mqtt</c> subprotocol, or a wrong <c>Sec-WebSocket-Accept</c>.</summary>
        WebsocketUpgradeFailed = 407,
        /// <summary>The server broke the WebSocket protocol (text or masked frames, a frame over the size limit, bad fragments or opcodes).</summary>
        WebsocketProtocol = 408,
        /// <summary>The PKCS#11 module file does not exist.</summary>
        Pkcs11ModuleNotFound = 500,
        /// <summary>The file is not a PKCS#11 module (not a shared library, no <c>C_GetFunctionList</c>, or its <c>C_Initialize</c> failed).</summary>
        Pkcs11ModuleInvalid = 501,
        /// <summary>A PKCS#11 URI (RFC 7512) is malformed or names an attribute tether does not know.</summary>
        Pkcs11UriInvalid = 502,
        /// <summary>No token matching the URI is present.</summary>
        Pkcs11TokenAbsent = 503,
        /// <summary>The token refused the PIN.</summary>
        Pkcs11PinIncorrect = 504,
        /// <summary>The token's user PIN is locked (too many wrong PINs): unlock it with the SO PIN.</summary>
        Pkcs11PinLocked = 505,
        /// <summary>No private key on the token matches the URI.</summary>
        Pkcs11KeyNotFound = 506,
        /// <summary>More than one private key (or token) matches the URI: add <c>id=</c> or <c>object=</c>.</summary>
        Pkcs11KeyAmbiguous = 507,
        /// <summary>The token holds no certificate for the key.</summary>
        Pkcs11CertNotFound = 508,
        /// <summary>The token lacks the signing mechanism the key needs (CKM_ECDSA, CKM_RSA_PKCS or CKM_RSA_PKCS_PSS).</summary>
        Pkcs11MechanismUnsupported = 509,
        /// <summary>The token failed during a session (removed, closed sessions, device error): retried at the next connection.</summary>
        Pkcs11TokenFailed = 510,
        /// <summary>This build of tether has no PKCS#11 support (the <c>pkcs11</c> feature, Linux only).</summary>
        Pkcs11Unavailable = 511,
        /// <summary>DPS or the hub refused to issue a certificate (a bad CSR, 400040; no pending request matches, 412001; or the registration failed): the message names the error code. Not retried; the current credential stays in force.</summary>
        CertIssuanceRefused = 600,
        /// <summary>DPS assigned the device to a hub that speaks MQTT v5 only (<c>connectionProfile</c> <c>mqttV5</c>); tether speaks MQTT 3.1.1.</summary>
        HubRequiresMqttV5 = 601,
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
        /// <summary>Certificate renewal progress: <see cref="ClientEvent.Certificate"/>.</summary>
        Certificate = 10,
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
