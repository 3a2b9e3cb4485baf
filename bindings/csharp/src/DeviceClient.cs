// The device client: connect, send, receive, twin and methods over IoT Hub MQTT, pumped by
// Poll on the caller's thread.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Tether
{
    /// <summary>
    /// A device (or module) client for IoT Hub, shaped after
    /// <c>Microsoft.Azure.Devices.Client.DeviceClient</c> but without hidden threads: the
    /// connection runs inside <see cref="Poll(int)"/> (and the calls that wait, such as
    /// <see cref="Open(int)"/>, <see cref="WaitForAcknowledgement"/>, <see cref="GetTwin"/>),
    /// and every event handler runs on the thread that called it. Call Poll regularly: that
    /// is where the client sends, receives, pings, renews its token and reconnects.
    /// Not thread-safe: use one client from one thread at a time.
    /// </summary>
    public sealed class DeviceClient : IDisposable
    {
        internal sealed class Handle : SafeHandleZeroOrMinusOneIsInvalid
        {
            public Handle() : base(true)
            {
            }

            protected override bool ReleaseHandle()
            {
                Native.tether_client_free(handle);
                return true;
            }
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct OptionsNative
        {
            public ushort Port;
            public ushort KeepAliveSecs;
            public uint TokenTtlSecs;
            public uint MaxInflight;
            public uint ConnectTimeoutMs;
            public uint RetryMaxMs;
            public ushort WebsocketPort;
            public byte Transport;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct EventNative
        {
            public EventKind Kind;
            public ulong MessageId;
            public IntPtr Name;
            public IntPtr RequestId;
            public ushort Status;
            public ulong Version;
            public IntPtr Payload;
            public UIntPtr PayloadLen;
            public UIntPtr PropertyCount;
            public Result Error;
            public byte WillRetry;
        }

        private static class Native
        {
            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern OptionsNative tether_client_options_default();

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_new(byte[] connectionString, IntPtr tls, ref OptionsNative options, out Handle client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_new_from_env(out Handle client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_client_free(IntPtr client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_set_proxy(Handle client, byte[] proxyUrl);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_connect(Handle client, uint timeoutMs);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_send_telemetry(Handle client, byte[] payload, UIntPtr payloadLen,
                IntPtr[] keys, IntPtr[] values, UIntPtr propertyCount, byte qos, out ulong messageId);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_subscribe(Handle client, uint subscriptions);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_poll(Handle client, uint timeoutMs, out EventNative ev);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_event_property(Handle client, UIntPtr index, out IntPtr key, out IntPtr value);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_twin_get(Handle client, byte[] requestId, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_twin_patch_reported(Handle client, byte[] json, UIntPtr jsonLen,
                byte[] requestId, UIntPtr cap, out UIntPtr len);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_respond_method(Handle client, byte[] requestId, ushort status, byte[] json, UIntPtr jsonLen);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_set_keys(Handle client, byte[] primaryKey, byte[] secondaryKey);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern void tether_client_disconnect(Handle client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern UIntPtr tether_client_inflight(Handle client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_new_from_credentials(CredentialStore.Handle store, IntPtr tls,
                ref OptionsNative options, out Handle client);

            [DllImport(Interop.Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_client_renew_certificate(Handle client);
        }

        private readonly Handle handle;
        private readonly HashSet<ulong> unacknowledged = new HashSet<ulong>();
        private readonly Dictionary<string, Func<MethodRequest, MethodResponse>> methodHandlers =
            new Dictionary<string, Func<MethodRequest, MethodResponse>>();
        private Func<MethodRequest, MethodResponse> defaultMethodHandler;

        private DeviceClient(Handle handle)
        {
            this.handle = handle;
        }

        /// <summary>
        /// Raised inside Poll when the client has reconnected by itself (after a network loss
        /// or a token renewal); the argument names the TLS version and suite. The first
        /// connection is <see cref="Open(int)"/> returning.
        /// </summary>
        public event Action<string> Connected;
        /// <summary>Raised when the connection ends.</summary>
        public event Action<ConnectionStatus> Disconnected;
        /// <summary>Raised when a QoS 1 message is acknowledged, with its id.</summary>
        public event Action<ulong> TelemetryAcknowledged;
        /// <summary>Raised for each cloud-to-device message (subscribe with <see cref="Subscriptions.CloudToDevice"/>).</summary>
        public event Action<Message> MessageReceived;
        /// <summary>
        /// Raised for a direct-method request no handler set with <see cref="SetMethodHandler"/>
        /// or <see cref="SetMethodDefaultHandler"/> answers; answer with <see cref="RespondToMethod"/>.
        /// </summary>
        public event Action<MethodRequest> MethodRequested;
        /// <summary>Raised for each twin GET or PATCH answer.</summary>
        public event Action<TwinResponse> TwinResponseReceived;
        /// <summary>Raised for each desired-properties patch.</summary>
        public event Action<DesiredPropertiesPatch> DesiredPropertiesUpdated;
        /// <summary>Raised when the hub refuses a subscription; the argument is the topic filter.</summary>
        public event Action<string> SubscriptionRefused;
        /// <summary>A message from the hub that could not be decoded, handed over raw (topic in
        /// <c>Description</c>, body in <c>Message</c>, reason in <c>ConnectionStatus</c>); the
        /// connection stays up.</summary>
        public event Action<ClientEvent> UndecodableMessageReceived;
        /// <summary>Raised for certificate renewal progress (requested, issued, swapped,
        /// rolled back, failed).</summary>
        public event Action<CertificateStatus> CertificateChanged;

        /// <summary>
        /// Creates a client for <c>HostName=...;DeviceId=...;SharedAccessKey=...</c> (or
        /// <c>SharedAccessSignature=</c>, or <c>x509=true</c> with a client certificate in
        /// <see cref="ClientOptions.Tls"/>). Nothing is opened yet.
        /// </summary>
        public static DeviceClient CreateFromConnectionString(string connectionString, ClientOptions options = null)
        {
            if (connectionString == null)
            {
                throw new ArgumentNullException("connectionString");
            }
            TlsConfig tls;
            OptionsNative o = NativeOptions(options, out tls);
            byte[] cs = Interop.Utf8(connectionString);
            bool added = false;
            TlsConfig.Handle tlsHandle = tls == null ? null : tls.Live;
            try
            {
                IntPtr tlsPtr = Interop.AddRef(tlsHandle, ref added);
                Handle h;
                Result r = Native.tether_client_new(cs, tlsPtr, ref o, out h);
                if (r != Result.Ok)
                {
                    throw Interop.Error(r);
                }
                DeviceClient client = new DeviceClient(h);
                if (options != null && options.Proxy != null)
                {
                    try
                    {
                        client.SetProxy(options.Proxy.Length == 0 ? null : options.Proxy);
                    }
                    catch
                    {
                        client.Dispose();
                        throw;
                    }
                }
                return client;
            }
            finally
            {
                if (added)
                {
                    tlsHandle.DangerousRelease();
                }
                Array.Clear(cs, 0, cs.Length);
            }
        }

        private static OptionsNative NativeOptions(ClientOptions options, out TlsConfig tls)
        {
            OptionsNative o = Native.tether_client_options_default();
            tls = null;
            if (options != null)
            {
                if (options.Port.HasValue) o.Port = options.Port.Value;
                if (options.KeepAliveSeconds.HasValue) o.KeepAliveSecs = options.KeepAliveSeconds.Value;
                if (options.TokenTimeToLiveSeconds.HasValue) o.TokenTtlSecs = options.TokenTimeToLiveSeconds.Value;
                if (options.MaxInflight.HasValue) o.MaxInflight = options.MaxInflight.Value;
                if (options.ConnectTimeoutMilliseconds.HasValue) o.ConnectTimeoutMs = options.ConnectTimeoutMilliseconds.Value;
                if (options.RetryMaxMilliseconds.HasValue) o.RetryMaxMs = options.RetryMaxMilliseconds.Value;
                if (options.WebSocketPort.HasValue) o.WebsocketPort = options.WebSocketPort.Value;
                if (options.Transport.HasValue) o.Transport = (byte)options.Transport.Value;
                tls = options.Tls;
            }
            return o;
        }

        /// <summary>
        /// Creates a client for the device whose issued certificate <paramref name="credentialsDir"/>
        /// holds (from <see cref="Dps.ProvisionWithCsr"/> or <c>tether provision --csr --out DIR</c>):
        /// it connects to the stored hub with the stored certificate and key, and renews the
        /// certificate through the hub at 80 % of its validity, storing each renewed one in the
        /// folder (<see cref="CertificateChanged"/>). <see cref="ClientOptions.Tls"/> gives the
        /// trust (extra CAs). Nothing is opened yet.
        /// </summary>
        public static DeviceClient CreateFromCredentials(string credentialsDir, ClientOptions options = null)
        {
            TlsConfig tls;
            OptionsNative o = NativeOptions(options, out tls);
            using (CredentialStore store = CredentialStore.Open(credentialsDir))
            {
                bool added = false;
                TlsConfig.Handle tlsHandle = tls == null ? null : tls.Live;
                try
                {
                    IntPtr tlsPtr = Interop.AddRef(tlsHandle, ref added);
                    Handle h;
                    Interop.Check(Native.tether_client_new_from_credentials(store.Live, tlsPtr, ref o, out h));
                    return new DeviceClient(h);
                }
                finally
                {
                    if (added)
                    {
                        tlsHandle.DangerousRelease();
                    }
                }
            }
        }

        /// <summary>
        /// Provisions the device through DPS with a CSR (<see cref="Dps.ProvisionWithCsr"/>:
        /// the certificate and its key go to <paramref name="credentialsDir"/>), then creates a
        /// client that connects with them and renews them (<see cref="CreateFromCredentials"/>).
        /// </summary>
        public static DeviceClient CreateFromDpsWithCsr(string idScope, string registrationId, string deviceKeyBase64,
            string credentialsDir, DpsOptions dps = null, ClientOptions options = null)
        {
            Dps.ProvisionWithCsr(idScope, registrationId, deviceKeyBase64, credentialsDir, dps);
            return CreateFromCredentials(credentialsDir, options);
        }

        /// <summary>Renews the certificate now through the hub (a client from
        /// <see cref="CreateFromCredentials"/>); progress comes as <see cref="CertificateChanged"/>.</summary>
        public void RenewCertificate()
        {
            Interop.Check(Native.tether_client_renew_certificate(Live));
        }

        /// <summary>
        /// Creates a client from <c>TETHER_CONNECTION_STRING</c> (required), <c>TETHER_CA_FILE</c>
        /// (an extra trusted CA), <c>TETHER_PORT</c> (default 8883), <c>TETHER_CERT_FILE</c> and
        /// <c>TETHER_KEY_FILE</c> (X.509).
        /// </summary>
        public static DeviceClient CreateFromEnvironment()
        {
            Handle h;
            Result r = Native.tether_client_new_from_env(out h);
            if (r != Result.Ok)
            {
                throw Interop.Error(r);
            }
            return new DeviceClient(h);
        }

        /// <summary>
        /// Provisions the device through the Device Provisioning Service
        /// (<see cref="Dps.Provision"/>), then creates a client for the assigned hub and
        /// device id: with <paramref name="deviceKeyBase64"/> (SAS; for a group enrollment the
        /// key from <see cref="Dps.DeriveKey"/> and <see cref="DpsOptions.GroupEnrollment"/>),
        /// or when it is null with the client certificate in <see cref="ClientOptions.Tls"/>
        /// (X.509; DPS uses <see cref="DpsOptions.Tls"/>, by default the same). Blocks during
        /// provisioning; the client is not opened yet.
        /// </summary>
        public static DeviceClient CreateFromDps(string idScope, string registrationId, string deviceKeyBase64,
            DpsOptions dps = null, ClientOptions options = null)
        {
            dps = dps ?? new DpsOptions();
            if (dps.Tls == null && options != null && options.Tls != null)
            {
                dps = new DpsOptions
                {
                    Endpoint = dps.Endpoint, Port = dps.Port, GroupEnrollment = dps.GroupEnrollment,
                    Tls = options.Tls, TimeoutMilliseconds = dps.TimeoutMilliseconds,
                };
            }
            DpsAssignment assigned = Dps.Provision(idScope, registrationId, deviceKeyBase64, dps);
            string auth;
            if (deviceKeyBase64 != null)
            {
                auth = "SharedAccessKey=" + deviceKeyBase64;
            }
            else
            {
                if (options == null || options.Tls == null)
                {
                    throw new ArgumentException("X.509 (no device key) needs the client certificate in options.Tls", "options");
                }
                auth = "x509=true";
            }
            return CreateFromConnectionString(
                "HostName=" + assigned.AssignedHub + ";DeviceId=" + assigned.DeviceId + ";" + auth, options);
        }

        private Handle Live
        {
            get
            {
                if (handle.IsClosed)
                {
                    throw new ObjectDisposedException("DeviceClient");
                }
                return handle;
            }
        }

        /// <summary>
        /// Connects and waits up to <paramref name="timeoutMilliseconds"/> for the hub to accept,
        /// retrying network failures. Refusals a retry cannot fix (TLS policy, credentials,
        /// expired token, clock not set) throw at once.
        /// </summary>
        public void Open(int timeoutMilliseconds = 30000)
        {
            Interop.Check(Native.tether_client_connect(Live, Milliseconds(timeoutMilliseconds)));
        }

        /// <summary>As <see cref="Open(int)"/>.</summary>
        public void Open(TimeSpan timeout)
        {
            Open((int)timeout.TotalMilliseconds);
        }

        /// <summary>
        /// Sends a telemetry message with application <paramref name="properties"/> (a null value
        /// sends the bare key) and, when given, the content type (<c>$.ct</c>) and encoding
        /// (<c>$.ce</c>). QoS 1 (the default) messages are queued while disconnected and
        /// re-sent until acknowledged. Returns the id a later acknowledgement carries (see
        /// <see cref="WaitForAcknowledgement"/> and <see cref="TelemetryAcknowledged"/>).
        /// </summary>
        public ulong SendEvent(byte[] payload, IDictionary<string, string> properties = null,
            string contentType = null, string contentEncoding = null, int qos = 1)
        {
            Handle h = Live;
            if (qos < 0 || qos > 255)
            {
                throw new ArgumentOutOfRangeException("qos");
            }
            List<KeyValuePair<string, string>> all = new List<KeyValuePair<string, string>>();
            if (properties != null)
            {
                all.AddRange(properties);
            }
            if (contentType != null)
            {
                all.Add(new KeyValuePair<string, string>("$.ct", contentType));
            }
            if (contentEncoding != null)
            {
                all.Add(new KeyValuePair<string, string>("$.ce", contentEncoding));
            }
            IntPtr[] keys = new IntPtr[Math.Max(1, all.Count)];
            IntPtr[] values = new IntPtr[Math.Max(1, all.Count)];
            try
            {
                for (int i = 0; i < all.Count; i++)
                {
                    if (all[i].Key == null)
                    {
                        throw new ArgumentNullException("properties", "a property key is null");
                    }
                    keys[i] = AllocUtf8(all[i].Key);
                    values[i] = all[i].Value == null ? IntPtr.Zero : AllocUtf8(all[i].Value);
                }
                int length = payload == null ? 0 : payload.Length;
                ulong id;
                Result r = Native.tether_client_send_telemetry(h, length == 0 ? null : payload, (UIntPtr)length,
                    keys, values, (UIntPtr)all.Count, (byte)qos, out id);
                if (r != Result.Ok)
                {
                    throw Interop.Error(r);
                }
                if (qos == 1)
                {
                    unacknowledged.Add(id);
                }
                return id;
            }
            finally
            {
                for (int i = 0; i < keys.Length; i++)
                {
                    if (keys[i] != IntPtr.Zero) Marshal.FreeHGlobal(keys[i]);
                    if (values[i] != IntPtr.Zero) Marshal.FreeHGlobal(values[i]);
                }
            }
        }

        /// <summary>Sends UTF-8 text (JSON by default: <c>$.ct=application/json</c>, <c>$.ce=utf-8</c>).</summary>
        public ulong SendEvent(string body, IDictionary<string, string> properties = null,
            string contentType = "application/json", string contentEncoding = "utf-8", int qos = 1)
        {
            return SendEvent(Encoding.UTF8.GetBytes(body ?? ""), properties, contentType, contentEncoding, qos);
        }

        /// <summary>
        /// Polls (running handlers for other events) until the QoS 1 message
        /// <paramref name="messageId"/> is acknowledged; false when the time runs out.
        /// </summary>
        public bool WaitForAcknowledgement(ulong messageId, int timeoutMilliseconds)
        {
            Stopwatch clock = Stopwatch.StartNew();
            while (unacknowledged.Contains(messageId))
            {
                long left = timeoutMilliseconds - clock.ElapsedMilliseconds;
                if (left <= 0)
                {
                    return false;
                }
                Poll((int)left);
            }
            return true;
        }

        /// <summary>QoS 1 messages waiting for acknowledgement.</summary>
        public int Inflight
        {
            get { return (int)(ulong)Native.tether_client_inflight(Live); }
        }

        /// <summary>
        /// Subscribes to C2D messages, method requests and/or twin topics, now if connected
        /// and again on every reconnection.
        /// </summary>
        public void Subscribe(Subscriptions subscriptions)
        {
            Interop.Check(Native.tether_client_subscribe(Live, (uint)subscriptions));
        }

        /// <summary>Answers the method <paramref name="methodName"/> with <paramref name="handler"/> (subscribes to methods).</summary>
        public void SetMethodHandler(string methodName, Func<MethodRequest, MethodResponse> handler)
        {
            if (methodName == null)
            {
                throw new ArgumentNullException("methodName");
            }
            Handle h = Live;
            if (handler == null)
            {
                methodHandlers.Remove(methodName);
                return;
            }
            methodHandlers[methodName] = handler;
            Interop.Check(Native.tether_client_subscribe(h, (uint)Subscriptions.Methods));
        }

        /// <summary>Answers every method without its own handler (subscribes to methods).</summary>
        public void SetMethodDefaultHandler(Func<MethodRequest, MethodResponse> handler)
        {
            Handle h = Live;
            defaultMethodHandler = handler;
            if (handler != null)
            {
                Interop.Check(Native.tether_client_subscribe(h, (uint)Subscriptions.Methods));
            }
        }

        /// <summary>Answers a direct-method request with a status (e.g. 200) and a JSON body (or null).</summary>
        public void RespondToMethod(string requestId, int status, string json)
        {
            Handle h = Live;
            if (status < 0 || status > 65535)
            {
                throw new ArgumentOutOfRangeException("status");
            }
            byte[] body = json == null ? null : Encoding.UTF8.GetBytes(json);
            int length = body == null ? 0 : body.Length;
            Interop.Check(Native.tether_client_respond_method(h, Interop.Utf8(requestId), (ushort)status,
                length == 0 ? null : body, (UIntPtr)length));
        }

        /// <summary>
        /// Requests the twin without waiting; returns the request id the
        /// <see cref="TwinResponseReceived"/> answer carries.
        /// </summary>
        public string RequestTwin()
        {
            Handle h = Live;
            return RequestId((byte[] b, UIntPtr c, out UIntPtr l) => Native.tether_client_twin_get(h, b, c, out l));
        }

        /// <summary>Sends a reported-properties patch without waiting; returns its request id.</summary>
        public string RequestUpdateReportedProperties(string json)
        {
            Handle h = Live;
            byte[] body = Encoding.UTF8.GetBytes(json ?? "");
            return RequestId((byte[] b, UIntPtr c, out UIntPtr l) =>
                Native.tether_client_twin_patch_reported(h, body, (UIntPtr)body.Length, b, c, out l));
        }

        /// <summary>
        /// Gets the twin document, polling (and running handlers for other events) until the
        /// answer arrives. Check <see cref="TwinResponse.Status"/> (200). Throws a
        /// <see cref="TetherException"/> with <see cref="Result.Timeout"/> when time runs out.
        /// </summary>
        public TwinResponse GetTwin(int timeoutMilliseconds = 30000)
        {
            return WaitForTwin(RequestTwin(), timeoutMilliseconds);
        }

        /// <summary>
        /// Reports properties (a JSON object) and waits for the answer (status 204 and the new
        /// version), as <see cref="GetTwin"/>.
        /// </summary>
        public TwinResponse UpdateReportedProperties(string json, int timeoutMilliseconds = 30000)
        {
            return WaitForTwin(RequestUpdateReportedProperties(json), timeoutMilliseconds);
        }

        // A twin request is sent even when the id does not fit, so it is never retried: the
        // buffer is sized for any id (decimal 64-bit numbers: 20 digits).
        private static string RequestId(BufferCall call)
        {
            byte[] buffer = new byte[64];
            UIntPtr len;
            Result r = call(buffer, (UIntPtr)buffer.Length, out len);
            if (r != Result.Ok)
            {
                throw Interop.Error(r);
            }
            return Encoding.ASCII.GetString(buffer, 0, (int)(ulong)len);
        }

        private TwinResponse WaitForTwin(string requestId, int timeoutMilliseconds)
        {
            Stopwatch clock = Stopwatch.StartNew();
            while (true)
            {
                long left = timeoutMilliseconds - clock.ElapsedMilliseconds;
                if (left <= 0)
                {
                    throw new TetherException(Result.Timeout, "no twin answer to request " + requestId + " in time");
                }
                ClientEvent e = Poll((int)left);
                if (e.Kind == EventKind.TwinResponse && e.TwinResponse.RequestId == requestId)
                {
                    return e.TwinResponse;
                }
            }
        }

        /// <summary>
        /// Tunnels the next connections through the HTTP proxy <paramref name="proxyUrl"/>
        /// (<c>http://[user:password@]host[:port]</c>, CONNECT), or directly when it is null. By
        /// default a client uses the environment's proxy (<c>TETHER_PROXY</c>,
        /// <c>HTTPS_PROXY</c>, <c>https_proxy</c>; <c>NO_PROXY</c>). The password is never
        /// logged or put in error messages.
        /// </summary>
        public void SetProxy(string proxyUrl)
        {
            byte[] url = Interop.Utf8(proxyUrl);
            try
            {
                Interop.Check(Native.tether_client_set_proxy(Live, url));
            }
            finally
            {
                if (url != null) Array.Clear(url, 0, url.Length);
            }
        }

        /// <summary>Replaces the SAS keys (key rotation); the next connection uses them.</summary>
        public void SetKeys(string primaryKey, string secondaryKey = null)
        {
            byte[] p = Interop.Utf8(primaryKey);
            byte[] s = Interop.Utf8(secondaryKey);
            try
            {
                Interop.Check(Native.tether_client_set_keys(Live, p, s));
            }
            finally
            {
                if (p != null) Array.Clear(p, 0, p.Length);
                if (s != null) Array.Clear(s, 0, s.Length);
            }
        }

        /// <summary>
        /// Runs the connection for up to <paramref name="timeoutMilliseconds"/> and returns the
        /// next event (<see cref="EventKind.None"/> when nothing happened), after raising the
        /// matching .NET event on this thread. An exception from a handler reaches the caller.
        /// </summary>
        public ClientEvent Poll(int timeoutMilliseconds)
        {
            Handle h = Live;
            EventNative ev;
            Interop.Check(Native.tether_client_poll(h, Milliseconds(timeoutMilliseconds), out ev));
            ClientEvent e = Copy(h, ref ev);
            Dispatch(e);
            return e;
        }

        /// <summary>As <see cref="Poll(int)"/>.</summary>
        public ClientEvent Poll(TimeSpan timeout)
        {
            return Poll((int)timeout.TotalMilliseconds);
        }

        private static ClientEvent Copy(Handle h, ref EventNative ev)
        {
            ClientEvent e = new ClientEvent();
            e.Kind = ev.Kind;
            switch (ev.Kind)
            {
                case EventKind.Connected:
                case EventKind.SubscriptionRefused:
                    e.Description = Interop.FromUtf8(ev.Name);
                    break;
                case EventKind.TelemetryAcknowledged:
                    e.MessageId = ev.MessageId;
                    break;
                case EventKind.CloudToDeviceMessage:
                    Dictionary<string, string> props = new Dictionary<string, string>();
                    ulong count = (ulong)ev.PropertyCount;
                    for (ulong i = 0; i < count; i++)
                    {
                        IntPtr key;
                        IntPtr value;
                        Interop.Check(Native.tether_client_event_property(h, (UIntPtr)i, out key, out value));
                        props[Interop.FromUtf8(key)] = Interop.FromUtf8(value);
                    }
                    e.Message = new Message(Interop.Bytes(ev.Payload, ev.PayloadLen), props);
                    break;
                case EventKind.MethodRequest:
                    e.MethodRequest = new MethodRequest(Interop.FromUtf8(ev.Name), Interop.FromUtf8(ev.RequestId),
                        Interop.Bytes(ev.Payload, ev.PayloadLen));
                    break;
                case EventKind.TwinResponse:
                    e.TwinResponse = new TwinResponse(Interop.FromUtf8(ev.RequestId), ev.Status, ev.Version,
                        Interop.Bytes(ev.Payload, ev.PayloadLen));
                    break;
                case EventKind.DesiredPropertiesPatch:
                    e.DesiredProperties = new DesiredPropertiesPatch(ev.Version, Interop.Bytes(ev.Payload, ev.PayloadLen));
                    break;
                case EventKind.Disconnected:
                    e.ConnectionStatus = new ConnectionStatus(ev.Error,
                        ev.Error == Result.Ok ? "disconnected" : Interop.LastError(), ev.WillRetry != 0);
                    break;
                case EventKind.Certificate:
                    e.Certificate = new CertificateStatus(Interop.FromUtf8(ev.Name), ev.Version, ev.Error,
                        ev.Error == Result.Ok ? null : Interop.LastError(), ev.WillRetry != 0,
                        Interop.FromUtf8(ev.RequestId));
                    break;
                case EventKind.Undecodable:
                    e.Description = Interop.FromUtf8(ev.Name);
                    e.Message = new Message(Interop.Bytes(ev.Payload, ev.PayloadLen), new Dictionary<string, string>());
                    e.ConnectionStatus = new ConnectionStatus(ev.Error, Interop.LastError(), true);
                    break;
            }
            return e;
        }

        private void Dispatch(ClientEvent e)
        {
            switch (e.Kind)
            {
                case EventKind.Connected:
                    Raise(Connected, e.Description);
                    break;
                case EventKind.TelemetryAcknowledged:
                    unacknowledged.Remove(e.MessageId);
                    Raise(TelemetryAcknowledged, e.MessageId);
                    break;
                case EventKind.CloudToDeviceMessage:
                    Raise(MessageReceived, e.Message);
                    break;
                case EventKind.MethodRequest:
                    Func<MethodRequest, MethodResponse> handler;
                    if (!methodHandlers.TryGetValue(e.MethodRequest.Name, out handler))
                    {
                        handler = defaultMethodHandler;
                    }
                    if (handler == null)
                    {
                        Raise(MethodRequested, e.MethodRequest);
                        break;
                    }
                    MethodResponse response;
                    try
                    {
                        response = handler(e.MethodRequest);
                    }
                    catch (Exception)
                    {
                        // The service still gets an answer; the caller of Poll gets the exception.
                        RespondToMethod(e.MethodRequest.RequestId, 500, "{\"error\":\"the method handler failed\"}");
                        throw;
                    }
                    if (response == null)
                    {
                        response = new MethodResponse(200, null);
                    }
                    RespondToMethod(e.MethodRequest.RequestId, response.Status, response.Json);
                    break;
                case EventKind.TwinResponse:
                    Raise(TwinResponseReceived, e.TwinResponse);
                    break;
                case EventKind.DesiredPropertiesPatch:
                    Raise(DesiredPropertiesUpdated, e.DesiredProperties);
                    break;
                case EventKind.SubscriptionRefused:
                    Raise(SubscriptionRefused, e.Description);
                    break;
                case EventKind.Disconnected:
                    Raise(Disconnected, e.ConnectionStatus);
                    break;
                case EventKind.Undecodable:
                    Raise(UndecodableMessageReceived, e);
                    break;
                case EventKind.Certificate:
                    Raise(CertificateChanged, e.Certificate);
                    break;
            }
        }

        private static void Raise<T>(Action<T> handlers, T argument)
        {
            if (handlers != null)
            {
                handlers(argument);
            }
        }

        /// <summary>
        /// Disconnects gracefully (MQTT DISCONNECT, TLS close_notify); the client stays usable
        /// and does not reconnect until <see cref="Open(int)"/>. Idempotent; a no-op after Dispose.
        /// </summary>
        public void Close()
        {
            if (!handle.IsClosed)
            {
                Native.tether_client_disconnect(handle);
            }
        }

        /// <summary>Closes and frees the native client. Later calls throw ObjectDisposedException.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }

        private static uint Milliseconds(int ms)
        {
            if (ms < 0)
            {
                throw new ArgumentOutOfRangeException("timeoutMilliseconds");
            }
            return (uint)ms;
        }

        private static IntPtr AllocUtf8(string text)
        {
            byte[] bytes = Interop.Utf8(text);
            IntPtr p = Marshal.AllocHGlobal(bytes.Length);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            return p;
        }
    }
}
