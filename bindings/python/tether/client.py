"""The device client: ``tether_client_*`` with a Pythonic face.

One ``DeviceClient`` owns one native client. Nothing runs in the background: the
connection (TLS, MQTT, keep-alive, acknowledgements, token renewal, reconnection) advances
inside ``poll()``, and every waiting method (``wait_acked``, ``get_twin``,
``receive_message``...) polls for you. Not thread-safe: use a client from one thread at a
time.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import time
from ctypes import byref, c_char_p, c_size_t, c_uint64, c_void_p
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, Optional, Protocol, Set, TypeVar, Union

from . import _native as n
from ._native import ClosedError, Managed, TetherError, TetherTimeout, check, cstr

_lib = n.lib

Payload = Union[bytes, bytearray, memoryview, str]
_T = TypeVar("_T")


def _ms(seconds: Optional[float]) -> int:
    if seconds is None:
        return 0xFFFFFFFF
    return max(0, min(int(seconds * 1000), 0xFFFFFFFF))


def _bytes(data: Payload) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


# ---------------------------------------------------------------------------------------
# What poll() returns.


@dataclass
class Message:
    """A cloud-to-device message: body and decoded properties (``None`` for a bare key;
    system properties under their names, e.g. ``$.mid``, ``$.to``)."""

    data: bytes
    properties: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def message_id(self) -> Optional[str]:
        return self.properties.get("$.mid")

    def json(self) -> Any:
        return json.loads(self.data)


class _Responder(Protocol):
    def respond_method(self, request: "MethodRequest", status: int, payload: Any) -> Any: ...


@dataclass
class MethodRequest:
    """A direct-method call; answer it with ``respond(status, payload)``."""

    name: str
    request_id: str
    payload: bytes
    _client: Optional["_Responder"] = field(default=None, repr=False, compare=False)

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None

    def respond(self, status: int = 200, payload: Any = None) -> Any:
        """Sends the method's response: ``payload`` is JSON-encoded unless it is bytes.
        From ``tether.aio`` this returns a coroutine: ``await request.respond(...)``."""
        if self._client is None:
            raise TetherError(n.INVALID_STATE, "this request has no client to answer through")
        return self._client.respond_method(self, status, payload)


@dataclass
class DesiredPatch:
    """A desired-properties update: the twin ``version`` and the patch as a dict."""

    version: int
    patch: Dict[str, Any]


@dataclass
class TwinResponse:
    request_id: str
    status: int
    version: int
    payload: bytes


@dataclass
class Connected:
    tls: str  # e.g. "TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


@dataclass
class Acked:
    message_id: int


@dataclass
class SubscriptionRefused:
    filter: str


@dataclass
class Undecodable:
    """A message from the hub whose topic or properties could not be decoded, as received."""

    topic: str
    payload: bytes
    code: int
    name: str


@dataclass
class Disconnected:
    code: int
    name: str
    will_retry: bool


@dataclass
class Certificate:
    """Certificate renewal progress (clients from :meth:`DeviceClient.from_credentials` or
    ``from_dps(..., csr=True)``): ``kind`` is ``renewal_requested``, ``issued``, ``swapped``
    (the renewed certificate is in force and stored), ``rolled_back`` (the hub refused it; the
    previous one is back) or ``renewal_failed``. ``not_after`` (Unix seconds) for ``issued``
    and ``swapped``; ``code``/``name`` for failures; ``will_retry`` for ``renewal_failed``."""

    kind: str
    not_after: int = 0
    code: int = 0
    name: str = ""
    will_retry: bool = False
    request_id: str = ""


class TwinError(TetherError):
    """The hub answered a twin request with an error status (``status``: 400, 429...)."""

    def __init__(self, status: int, body: bytes):
        self.status = status
        super().__init__(n.INVALID_STATE, f"twin request answered with status {status}: {body!r}")


# ---------------------------------------------------------------------------------------
# TLS configuration (an internal helper: the client keeps its own reference).


class TlsConfig(Managed):
    """An IoT Hub TLS policy: TLS 1.2, the hub's suites, the embedded IoT Hub roots plus
    ``ca_file``, and an optional client certificate."""

    _free = _lib.tether_tls_config_free

    def __init__(
        self,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        tls13: bool = False,
        pkcs11_module: Optional[str] = None,
        pkcs11_uri: Optional[str] = None,
        pkcs11_pin: Optional[str] = None,
    ):
        builder = _lib.tether_tls_config_builder_new()
        if not builder:
            raise TetherError(n.INVALID_STATE, n.last_error() or "could not create a TLS builder")
        try:
            if tls13:
                check(_lib.tether_tls_config_builder_enable_tls13(builder, True))
            if ca_file is not None:
                check(_lib.tether_tls_config_builder_add_ca_file(builder, cstr(str(ca_file))))
            if cert_file is not None or key_file is not None:
                if cert_file is None or key_file is None:
                    raise ValueError("cert_file and key_file go together")
                check(
                    _lib.tether_tls_config_builder_set_client_cert_files(
                        builder, cstr(str(cert_file)), cstr(str(key_file))
                    )
                )
            if pkcs11_uri is not None:
                # The key stays on the token; tether copies the PIN into memory it wipes.
                check(
                    _lib.tether_tls_config_builder_set_client_pkcs11(
                        builder,
                        cstr(None if pkcs11_module is None else str(pkcs11_module)),
                        cstr(pkcs11_uri),
                        cstr(pkcs11_pin),
                    )
                )
            out = c_void_p()
            check(_lib.tether_tls_config_builder_build(builder, byref(out)))
        finally:
            _lib.tether_tls_config_builder_free(builder)
        super().__init__(out.value)


# ---------------------------------------------------------------------------------------
# The client.


class Network:
    """How a client reaches the hub: the transport, the WebSocket port and the proxy."""

    TRANSPORTS = {"mqtt": n.TRANSPORT_MQTT, "websockets": n.TRANSPORT_WEBSOCKETS, "auto": n.TRANSPORT_AUTO}

    def __init__(self, transport: str, websocket_port: int, proxy: Optional[str]):
        if transport not in self.TRANSPORTS:
            raise ValueError(f"transport {transport!r}: use mqtt, websockets or auto")
        self.transport = transport
        self.websocket_port = websocket_port
        self.proxy = proxy

    def transport_code(self) -> int:
        return self.TRANSPORTS[self.transport]


class DeviceClient(Managed):
    """An IoT Hub device (or module) client over MQTT with tether's TLS policy.

    Create it with ``from_connection_string``, ``from_x509`` or ``from_environment``;
    ``connect()``; ``send()`` telemetry; receive with handlers (``on_message_received``,
    ``on_method_request_received``, ``on_twin_desired_properties_patch_received``) or with
    ``receive_message()``, ``receive_method_request()``, ``receive_desired_patch()``; read
    and report twin properties with ``get_twin()`` and ``patch_reported()``. ``close()``
    (or leaving a ``with`` block) disconnects gracefully and frees the native client.
    """

    _free = _lib.tether_client_free

    def __init__(self, handle: Optional[int]):
        super().__init__(handle)
        self._event = n.Event()
        self._subscribed = 0
        # QoS 1 ids sent and not yet acknowledged: bounded by the client's max_inflight
        # (the core refuses more with QUEUE_FULL), so memory stays flat over any number of
        # sends. An id is acknowledged when it is at most _last_id and no longer pending.
        self._pending: Set[int] = set()
        self._last_id = 0
        self._twin: Dict[str, TwinResponse] = {}
        self._messages: Deque[Message] = collections.deque()
        self._methods: Deque[MethodRequest] = collections.deque()
        self._patches: Deque[DesiredPatch] = collections.deque()
        self._fatal: Optional[Disconnected] = None
        self.tls: Optional[str] = None
        self._on_message: Optional[Callable[[Message], None]] = None
        self._on_method: Optional[Callable[[MethodRequest], None]] = None
        self._on_patch: Optional[Callable[[Dict[str, Any]], None]] = None
        #: Called with every :class:`Certificate` event (renewal progress), if set.
        self.on_certificate: Optional[Callable[[Certificate], None]] = None

    # -- construction ---------------------------------------------------------------

    @staticmethod
    def _options(
        port: Optional[int],
        keep_alive: Optional[int],
        token_ttl: Optional[int],
        max_inflight: Optional[int],
        connect_timeout: Optional[float],
        net: Optional["Network"] = None,
    ) -> n.ClientOptions:
        # The library's defaults (tether.defaults()); None keeps them.
        opts: n.ClientOptions = _lib.tether_client_options_default()
        if port is not None:
            opts.port = port
        if net is not None:
            opts.transport = net.transport_code()
            opts.websocket_port = net.websocket_port
        if keep_alive is not None:
            opts.keep_alive_secs = keep_alive
        if token_ttl is not None:
            opts.token_ttl_secs = token_ttl
        if max_inflight is not None:
            opts.max_inflight = max_inflight
        if connect_timeout is not None:
            opts.connect_timeout_ms = _ms(connect_timeout)
        return opts

    @classmethod
    def _create(
        cls, cs: str, tls: Optional[TlsConfig], opts: n.ClientOptions, net: Optional["Network"] = None
    ) -> "DeviceClient":
        out = c_void_p()
        try:
            check(_lib.tether_client_new(cstr(cs), tls._ptr() if tls else None, byref(opts), byref(out)))
        finally:
            if tls is not None:
                tls.close()  # the client keeps its own reference
        client = cls(out.value)
        if net is not None and net.proxy is not None:
            try:
                client.set_proxy(net.proxy or None)
            except BaseException:
                client.close()
                raise
        return client

    def set_proxy(self, url: Optional[str]) -> None:
        """Tunnels the next connections through the HTTP proxy ``url``
        (``http://[user:password@]host[:port]``, CONNECT), or directly with ``None``. By
        default a client uses the environment's proxy (``TETHER_PROXY``, ``HTTPS_PROXY``,
        ``https_proxy``; ``NO_PROXY``). The password is never logged or put in errors."""
        check(_lib.tether_client_set_proxy(self._ptr(), cstr(url) if url is not None else None))

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        ca_file: Optional[str] = None,
        port: Optional[int] = None,
        *,
        keep_alive: Optional[int] = None,
        token_ttl: Optional[int] = None,
        max_inflight: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        tls13: bool = False,
        transport: str = "mqtt",
        websocket_port: int = 443,
        proxy: Optional[str] = None,
    ) -> "DeviceClient":
        """A client for ``HostName=...;DeviceId=...;SharedAccessKey=...`` (or
        ``SharedAccessSignature=`` with a ready token). ``ca_file`` adds a trusted CA to the
        embedded IoT Hub roots (for a local hub). Nothing is opened yet.

        ``transport``: ``"mqtt"`` (on ``port``), ``"websockets"`` (MQTT over WebSockets on
        ``websocket_port``, for networks that allow only 443) or ``"auto"`` (``port``, then
        WebSockets when it cannot be reached). ``proxy``: an HTTP proxy URL
        (``http://[user:password@]host[:port]``); ``None`` uses the environment's
        (``HTTPS_PROXY`` ...), ``""`` connects directly."""
        tls = TlsConfig(ca_file=ca_file, tls13=tls13) if (ca_file or tls13) else None
        net = Network(transport, websocket_port, proxy)
        opts = cls._options(port, keep_alive, token_ttl, max_inflight, connect_timeout, net)
        return cls._create(connection_string, tls, opts, net)

    @classmethod
    def from_x509(
        cls,
        host: str,
        device_id: str,
        cert_file: str,
        key_file: str,
        ca_file: Optional[str] = None,
        port: Optional[int] = None,
        *,
        module_id: Optional[str] = None,
        keep_alive: Optional[int] = None,
        max_inflight: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        tls13: bool = False,
        transport: str = "mqtt",
        websocket_port: int = 443,
        proxy: Optional[str] = None,
    ) -> "DeviceClient":
        """A client authenticating with a certificate (CN = device id) and its key.
        ``transport``, ``websocket_port`` and ``proxy`` as for ``from_connection_string``."""
        tls = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file, tls13=tls13)
        net = Network(transport, websocket_port, proxy)
        return cls._x509(host, device_id, module_id, tls, port, keep_alive, max_inflight, connect_timeout, net)

    @classmethod
    def _x509(
        cls,
        host: str,
        device_id: str,
        module_id: Optional[str],
        tls: TlsConfig,
        port: Optional[int],
        keep_alive: Optional[int],
        max_inflight: Optional[int],
        connect_timeout: Optional[float],
        net: Optional["Network"] = None,
    ) -> "DeviceClient":
        cs = f"HostName={host};DeviceId={device_id};x509=true"
        if module_id:
            cs += f";ModuleId={module_id}"
        opts = cls._options(port, keep_alive, None, max_inflight, connect_timeout, net)
        return cls._create(cs, tls, opts, net)

    @classmethod
    def from_pkcs11(
        cls,
        host: str,
        device_id: str,
        module: Optional[str],
        uri: str,
        pin: Optional[str] = None,
        ca_file: Optional[str] = None,
        port: Optional[int] = None,
        *,
        module_id: Optional[str] = None,
        keep_alive: Optional[int] = None,
        max_inflight: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        tls13: bool = False,
        transport: str = "mqtt",
        websocket_port: int = 443,
        proxy: Optional[str] = None,
    ) -> "DeviceClient":
        """A client whose private key never leaves a PKCS#11 token (HSM, TPM through
        tpm2-pkcs11, secure element): ``module`` is the token's PKCS#11 library, ``uri`` an
        RFC 7512 URI naming the key (``pkcs11:token=...;object=...``); the certificate is
        read from the token. See docs/pkcs11.md."""
        tls = TlsConfig(ca_file=ca_file, tls13=tls13, pkcs11_module=module, pkcs11_uri=uri,
                        pkcs11_pin=pin)
        net = Network(transport, websocket_port, proxy)
        return cls._x509(host, device_id, module_id, tls, port, keep_alive, max_inflight, connect_timeout, net)

    @classmethod
    def from_credentials(
        cls,
        credentials_dir: str,
        ca_file: Optional[str] = None,
        port: Optional[int] = None,
        *,
        keep_alive: Optional[int] = None,
        max_inflight: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        tls13: bool = False,
    ) -> "DeviceClient":
        """A client for the device whose issued certificate ``credentials_dir`` holds (from
        ``from_dps(..., csr=True)`` or ``tether provision --csr --out DIR``): it connects to
        the stored hub with the stored certificate and renews it through the hub at 80 % of
        its validity, storing each renewed one in ``credentials_dir``
        (:class:`Certificate` events)."""
        tls = TlsConfig(ca_file=ca_file, tls13=tls13) if (ca_file or tls13) else None
        opts = cls._options(port, keep_alive, None, max_inflight, connect_timeout)
        store = c_void_p()
        check(_lib.tether_credential_store_open(cstr(credentials_dir), byref(store)))
        out = c_void_p()
        try:
            check(_lib.tether_client_new_from_credentials(
                store, tls._ptr() if tls else None, byref(opts), byref(out)))
        finally:
            _lib.tether_credential_store_free(store)
            if tls is not None:
                tls.close()
        return cls(out.value)

    def renew_certificate(self) -> None:
        """Renews the certificate now through the hub (a client from
        :meth:`from_credentials`); progress comes as :class:`Certificate` events."""
        check(_lib.tether_client_renew_certificate(self._ptr()))

    @classmethod
    def from_environment(cls) -> "DeviceClient":
        """A client from ``TETHER_CONNECTION_STRING`` (required), ``TETHER_CA_FILE``,
        ``TETHER_PORT``, ``TETHER_CERT_FILE`` / ``TETHER_KEY_FILE``."""
        out = c_void_p()
        check(_lib.tether_client_new_from_env(byref(out)))
        return cls(out.value)

    @classmethod
    def from_dps(
        cls,
        id_scope: str,
        registration_id: str,
        device_key: Optional[str] = None,
        *,
        group_enrollment: bool = False,
        endpoint: Optional[str] = None,
        dps_port: Optional[int] = None,
        port: Optional[int] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        timeout: Optional[float] = None,
        csr: bool = False,
        credentials_dir: Optional[str] = None,
        **options: Any,
    ) -> "DeviceClient":
        """Provisions the device through the Device Provisioning Service (see
        :func:`tether.provision`), then returns a client for the assigned hub and device id:
        with ``device_key`` (SAS; for a group enrollment the key derived with
        :func:`tether.derive_key`, and ``group_enrollment=True``), or with ``cert_file`` and
        ``key_file`` (X.509). Blocks during provisioning; the client is not connected yet.

        With ``csr=True`` DPS issues the device certificate from a CSR (a fresh P-256 key;
        api-version 2025-07-01-preview); chain and key are kept in ``credentials_dir``
        (required) and the client connects with them and renews them through the hub (see
        :meth:`from_credentials`)."""
        from .provisioning import provision, provision_with_csr

        if csr:
            if credentials_dir is None:
                raise ValueError("from_dps(csr=True) needs credentials_dir for the key and chain")
            provision_with_csr(
                id_scope, registration_id, credentials_dir, device_key,
                group_enrollment=group_enrollment, endpoint=endpoint, port=dps_port,
                ca_file=ca_file, cert_file=cert_file, key_file=key_file, timeout=timeout,
            )
            return cls.from_credentials(credentials_dir, ca_file=ca_file, port=port, **options)

        hub, device_id = provision(
            id_scope, registration_id, device_key, group_enrollment=group_enrollment,
            endpoint=endpoint, port=dps_port, ca_file=ca_file, cert_file=cert_file,
            key_file=key_file, timeout=timeout,
        )
        if device_key is not None:
            # provision() has checked the hub as a host name and the id as a device id a
            # connection string can carry; the round trip makes sure no field was injected.
            cs = f"HostName={hub};DeviceId={device_id};SharedAccessKey={device_key}"
            from .primitives import parse_connection_string

            parsed = parse_connection_string(cs)
            if (parsed["host_name"], parsed["device_id"], parsed["module_id"]) != (hub, device_id, None):
                raise ValueError("the DPS assignment does not fit in a connection string")
            return cls.from_connection_string(cs, ca_file=ca_file, port=port, **options)
        if cert_file is None or key_file is None:
            raise ValueError("from_dps needs device_key, or cert_file and key_file")
        return cls.from_x509(hub, device_id, cert_file, key_file, ca_file=ca_file, port=port, **options)

    # -- connection -----------------------------------------------------------------

    def connect(self, timeout: float = 30.0) -> None:
        """Connects, retrying network failures with back-off for up to ``timeout`` seconds.
        Refusals a retry cannot fix (TLS policy, credentials, clock) raise at once."""
        check(_lib.tether_client_connect(self._ptr(), _ms(timeout)))
        self._fatal = None

    def disconnect(self) -> None:
        """Disconnects gracefully; ``connect()`` again to resume."""
        _lib.tether_client_disconnect(self._ptr())

    @property
    def inflight(self) -> int:
        """QoS 1 messages not yet acknowledged."""
        return int(_lib.tether_client_inflight(self._ptr()))

    def set_keys(self, primary_key: str, secondary_key: Optional[str] = None) -> None:
        """Replaces the SAS keys for the next connection (key rotation)."""
        check(_lib.tether_client_set_keys(self._ptr(), cstr(primary_key), cstr(secondary_key)))

    # -- telemetry ------------------------------------------------------------------

    def send(
        self,
        payload: Payload,
        properties: Optional[Dict[str, Optional[str]]] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        qos: int = 1,
    ) -> int:
        """Queues a telemetry message and returns its id (QoS 1: ``wait_acked`` it).
        ``properties`` are application properties (``None`` value: a bare key); system
        properties may be given by name (``$.mid``...). ``content_type`` and
        ``content_encoding`` set ``$.ct`` and ``$.ce``."""
        data = _bytes(payload)
        props = dict(properties) if properties else {}
        if content_type is not None:
            props["$.ct"] = content_type
        if content_encoding is not None:
            props["$.ce"] = content_encoding
        count = len(props)
        keys = values = None
        if count:
            keys = (c_char_p * count)(*(k.encode("utf-8") for k in props))
            values = (c_char_p * count)(*(None if v is None else v.encode("utf-8") for v in props.values()))
        mid = c_uint64(0)
        check(
            _lib.tether_client_send_telemetry(
                self._ptr(), data, len(data), keys, values, count, qos, byref(mid)
            )
        )
        self._last_id = max(self._last_id, mid.value)
        if qos:
            self._pending.add(mid.value)
        return mid.value

    send_message = send  # the name azure-iot-device uses

    def wait_acked(self, ids: Union[int, Iterable[int]], timeout: float = 30.0) -> None:
        """Polls until every message in ``ids`` is acknowledged by the hub (a QoS 0 id is
        done once sent); raises TetherTimeout when ``timeout`` seconds pass first and
        ValueError for an id this client never returned."""
        wanted = self._unacked(ids)
        self._wait(lambda: None if wanted & self._pending else True, timeout, f"acknowledgement of {len(wanted)} message(s)")

    def _unacked(self, ids: Union[int, Iterable[int]]) -> Set[int]:
        """The ids among ``ids`` still waiting for their acknowledgement."""
        wanted = {ids} if isinstance(ids, int) else set(ids)
        unknown = sorted(i for i in wanted if not 0 < i <= self._last_id)
        if unknown:
            raise ValueError(f"not a message id this client returned: {unknown[:5]}")
        return wanted & self._pending

    # -- the pump -------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> Optional[object]:
        """Runs the connection for up to ``timeout`` seconds and returns the next event
        (``Connected``, ``Acked``, ``Message``, ``MethodRequest``, ``TwinResponse``,
        ``DesiredPatch``, ``SubscriptionRefused``, ``Disconnected``, ``Undecodable``), or
        ``None``. Events
        with a handler set are also passed to the handler; others are kept for the
        ``receive_*`` methods."""
        return self._poll(timeout)

    def _poll(self, timeout: float) -> Optional[object]:
        handle = self._ptr()
        ev = self._event
        check(_lib.tether_client_poll(handle, _ms(timeout), byref(ev)))
        kind = ev.kind
        if kind == n.EVENT_NONE:
            return None
        if kind == n.EVENT_TELEMETRY_ACKED:
            self._pending.discard(ev.message_id)
            return Acked(ev.message_id)
        payload = ctypes.string_at(ev.payload, ev.payload_len) if ev.payload else b""
        if kind == n.EVENT_C2D:
            props: Dict[str, Optional[str]] = {}
            key, value = c_char_p(), c_char_p()
            for i in range(ev.property_count):
                check(_lib.tether_client_event_property(handle, i, byref(key), byref(value)))
                props[(key.value or b"").decode("utf-8")] = (
                    None if value.value is None else value.value.decode("utf-8")
                )
            msg = Message(payload, props)
            if self._on_message is not None:
                self._on_message(msg)
            else:
                self._messages.append(msg)
            return msg
        if kind == n.EVENT_METHOD_REQUEST:
            req = MethodRequest(
                (ev.name or b"").decode("utf-8"), (ev.request_id or b"").decode("utf-8"), payload, self
            )
            if self._on_method is not None:
                self._on_method(req)
            else:
                self._methods.append(req)
            return req
        if kind == n.EVENT_TWIN_RESPONSE:
            resp = TwinResponse((ev.request_id or b"").decode("utf-8"), ev.status, ev.version, payload)
            self._twin[resp.request_id] = resp
            return resp
        if kind == n.EVENT_DESIRED_PATCH:
            patch = DesiredPatch(ev.version, json.loads(payload) if payload else {})
            if self._on_patch is not None:
                self._on_patch(patch.patch)
            else:
                self._patches.append(patch)
            return patch
        if kind == n.EVENT_CONNECTED:
            self.tls = (ev.name or b"").decode("utf-8")
            self._fatal = None
            return Connected(self.tls)
        if kind == n.EVENT_SUBSCRIPTION_REFUSED:
            n_logger().warning("subscription refused: %s", (ev.name or b"").decode("utf-8"))
            return SubscriptionRefused((ev.name or b"").decode("utf-8"))
        if kind == n.EVENT_UNDECODABLE:
            return Undecodable(
                (ev.name or b"").decode("utf-8", "replace"), payload, ev.error, n.result_name(ev.error)
            )
        if kind == n.EVENT_CERTIFICATE:
            cert = Certificate(
                (ev.name or b"").decode("utf-8"), int(ev.version), int(ev.error),
                n.result_name(ev.error) if ev.error else "", bool(ev.will_retry),
                (ev.request_id or b"").decode("utf-8"),
            )
            n_logger().info("certificate %s%s", cert.kind, f" ({cert.name})" if cert.name else "")
            if self.on_certificate is not None:
                self.on_certificate(cert)
            return cert
        if kind == n.EVENT_DISCONNECTED:
            d = Disconnected(ev.error, n.result_name(ev.error), bool(ev.will_retry))
            if not d.will_retry:
                self._fatal = d
            return d
        return None

    def _wait(self, ready: Callable[[], Optional[_T]], timeout: float, what: str) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            got = self._wait_step(ready, deadline, timeout, what, 1.0)
            if got is not None:
                return got

    def _wait_step(
        self, ready: Callable[[], Optional[_T]], deadline: float, timeout: float, what: str, slice: float
    ) -> Optional[_T]:
        """One round of a wait: ``ready()``'s result, or else raise (connection lost for good,
        deadline passed), or else poll up to ``slice`` seconds and return None."""
        got = ready()
        if got is not None:
            return got
        if self._fatal is not None:
            raise TetherError(self._fatal.code, f"connection lost and not retrying while waiting for {what}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TetherTimeout(f"no {what} within {timeout} s")
        self._poll(min(remaining, slice))
        return None

    # -- receiving ------------------------------------------------------------------

    def _want(self, bits: int) -> None:
        if self._subscribed & bits != bits:
            check(_lib.tether_client_subscribe(self._ptr(), bits | self._subscribed))
            self._subscribed |= bits

    def subscribe(self, c2d: bool = False, methods: bool = False, twin: bool = False) -> None:
        """Subscribes now (and after every reconnection) to what you want to receive.
        Setting a handler or calling a ``receive_*`` method does this for you."""
        bits = (n.SUBSCRIBE_C2D if c2d else 0) | (n.SUBSCRIBE_METHODS if methods else 0)
        bits |= n.SUBSCRIBE_TWIN if twin else 0
        if bits:
            self._want(bits)

    @property
    def on_message_received(self) -> Optional[Callable[[Message], None]]:
        return self._on_message

    @on_message_received.setter
    def on_message_received(self, handler: Optional[Callable[[Message], None]]) -> None:
        if handler is not None:
            self._want(n.SUBSCRIBE_C2D)
        self._on_message = handler

    @property
    def on_method_request_received(self) -> Optional[Callable[[MethodRequest], None]]:
        return self._on_method

    @on_method_request_received.setter
    def on_method_request_received(self, handler: Optional[Callable[[MethodRequest], None]]) -> None:
        if handler is not None:
            self._want(n.SUBSCRIBE_METHODS)
        self._on_method = handler

    @property
    def on_twin_desired_properties_patch_received(self) -> Optional[Callable[[Dict[str, Any]], None]]:
        return self._on_patch

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(
        self, handler: Optional[Callable[[Dict[str, Any]], None]]
    ) -> None:
        if handler is not None:
            self._want(n.SUBSCRIBE_TWIN)
        self._on_patch = handler

    def receive_message(self, timeout: float = 30.0) -> Message:
        """The next cloud-to-device message (polls up to ``timeout`` seconds)."""
        self._want(n.SUBSCRIBE_C2D)
        return self._wait(lambda: self._messages.popleft() if self._messages else None, timeout, "message")

    def receive_method_request(self, timeout: float = 30.0) -> MethodRequest:
        """The next direct-method request; answer it with ``request.respond(...)``."""
        self._want(n.SUBSCRIBE_METHODS)
        return self._wait(lambda: self._methods.popleft() if self._methods else None, timeout, "method request")

    def receive_desired_patch(self, timeout: float = 30.0) -> DesiredPatch:
        """The next desired-properties update."""
        self._want(n.SUBSCRIBE_TWIN)
        return self._wait(lambda: self._patches.popleft() if self._patches else None, timeout, "desired patch")

    def respond_method(self, request: Union[MethodRequest, str], status: int = 200, payload: Any = None) -> None:
        """Answers a direct method (``request`` or its request id) with ``status`` and a
        JSON ``payload`` (bytes are sent as they are)."""
        rid = request.request_id if isinstance(request, MethodRequest) else request
        body = payload if isinstance(payload, (bytes, bytearray)) else json.dumps(payload).encode("utf-8")
        check(_lib.tether_client_respond_method(self._ptr(), cstr(rid), status, bytes(body), len(body)))

    # -- twin -----------------------------------------------------------------------

    def _twin_request(self, send: Callable[[Any, int, Any], int], timeout: float) -> TwinResponse:
        request_id = self._twin_send(send)
        return self._twin_result(self._wait(lambda: self._twin.pop(request_id, None), timeout, "twin response"))

    def _twin_send(self, send: Callable[[Any, int, Any], int]) -> str:
        """Sends a twin request through ``send(buffer, size, length_out)``; its request id."""
        self._want(n.SUBSCRIBE_TWIN)
        rid = ctypes.create_string_buffer(64)  # request ids are decimal u64: 21 bytes suffice
        length = c_size_t(0)
        check(send(rid, len(rid), byref(length)))
        return rid.raw[: length.value].decode("ascii")

    @staticmethod
    def _twin_result(resp: TwinResponse) -> TwinResponse:
        if resp.status >= 300:
            raise TwinError(resp.status, resp.payload)
        return resp

    def _twin_get_sender(self) -> Callable[[Any, int, Any], int]:
        handle = self._ptr()
        return lambda b, c, l: int(_lib.tether_client_twin_get(handle, b, c, l))

    def _twin_patch_sender(self, patch: Dict[str, Any]) -> Callable[[Any, int, Any], int]:
        handle = self._ptr()
        body = json.dumps(patch).encode("utf-8")
        return lambda b, c, l: int(_lib.tether_client_twin_patch_reported(handle, body, len(body), b, c, l))

    def get_twin(self, timeout: float = 30.0) -> Dict[str, Any]:
        """The twin document (``{"desired": {...}, "reported": {...}}``)."""
        resp = self._twin_request(self._twin_get_sender(), timeout)
        return _twin_document(resp)

    def patch_reported(self, patch: Dict[str, Any], timeout: float = 30.0) -> int:
        """Sends a reported-properties patch, waits for the hub to accept it, and returns
        the twin's new version."""
        return self._twin_request(self._twin_patch_sender(patch), timeout).version

    patch_twin_reported_properties = patch_reported  # the name azure-iot-device uses

    def __repr__(self) -> str:
        state = "closed" if self.closed else (self.tls or "not connected")
        return f"<DeviceClient {state}>"


def _twin_document(resp: TwinResponse) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads(resp.payload) if resp.payload else {}
    return doc


def n_logger() -> logging.Logger:
    from ._logging import logger

    return logger


__all__ = [
    "DeviceClient",
    "Message",
    "MethodRequest",
    "DesiredPatch",
    "TwinResponse",
    "Connected",
    "Acked",
    "SubscriptionRefused",
    "Disconnected",
    "Undecodable",
    "TwinError",
    "TlsConfig",
    "ClosedError",
]
