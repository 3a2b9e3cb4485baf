"""Identity and topic primitives: SAS tokens, DPS key derivation, thumbprints, IoT Hub
MQTT names and topics. Thin, allocation-free calls into the library; buffers are sized
inside the binding."""

from __future__ import annotations

import ctypes
import time
from ctypes import byref, c_size_t
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from . import _native as n
from ._native import cstr, text_out

_lib = n.lib


def sas_token(
    resource_uri: str,
    key: str,
    expiry: Optional[int] = None,
    ttl: int = 3600,
    key_name: Optional[str] = None,
) -> str:
    """``SharedAccessSignature sr=...&sig=...&se=...`` for ``resource_uri`` (unencoded,
    e.g. ``myhub.azure-devices.net/devices/dev1``) signed with the base64 ``key``; the
    token expires at ``expiry`` (Unix seconds), or ``ttl`` seconds from now."""
    se = int(time.time()) + ttl if expiry is None else int(expiry)
    return text_out(_lib.tether_sas_token, cstr(resource_uri), cstr(key), cstr(key_name), se)


def derive_key(group_key: str, registration_id: str) -> str:
    """A device's key for a DPS group enrollment: base64(HMAC-SHA256(group key, id))."""
    return text_out(_lib.tether_dps_derive_key, cstr(group_key), cstr(registration_id))


def thumbprint(cert: Union[bytes, str, Path], algorithm: str = "sha256") -> str:
    """Uppercase hex thumbprint of the first certificate in ``cert`` (PEM or DER bytes, or
    a file path), ``sha1`` or ``sha256``, as the IoT Hub portal shows it."""
    if isinstance(cert, (str, Path)):
        cert = Path(cert).read_bytes()
    algo = {"sha1": n.THUMBPRINT_SHA1, "sha256": n.THUMBPRINT_SHA256}.get(algorithm.lower())
    if algo is None:
        raise ValueError(f"unknown thumbprint algorithm {algorithm!r} (sha1 or sha256)")
    return text_out(_lib.tether_x509_thumbprint, cert, len(cert), algo)


def client_id(device_id: str, module_id: Optional[str] = None) -> str:
    """The MQTT client id ``device`` or ``device/module``."""
    return text_out(_lib.tether_mqtt_client_id, cstr(device_id), cstr(module_id))


def username(
    host: str,
    device_id: str,
    module_id: Optional[str] = None,
    api_version: Optional[str] = None,
    client_type: Optional[str] = None,
    model_id: Optional[str] = None,
) -> str:
    """The MQTT user name ``{host}/{device}[/{module}]/?api-version=...``."""
    return text_out(
        _lib.tether_mqtt_username,
        cstr(host), cstr(device_id), cstr(module_id), cstr(api_version), cstr(client_type),
        cstr(model_id),
    )


def _encode(text: str) -> str:
    # The property-bag encoding (unreserved kept, everything else %XX uppercase).
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append(c if (c.isascii() and (c.isalnum() or c in "-_.~")) else f"%{b:02X}")
    return "".join(out)


def telemetry_topic(
    device_id: str,
    properties: Optional[Dict[str, Optional[str]]] = None,
    module_id: Optional[str] = None,
) -> str:
    """``devices/{d}[/modules/{m}]/messages/events/{bag}``; a ``None`` value is a bare key."""
    bag = "&".join(
        _encode(k) if v is None else f"{_encode(k)}={_encode(v)}"
        for k, v in (properties or {}).items()
    )
    raw = bag.encode("ascii")
    return text_out(_lib.tether_telemetry_topic, cstr(device_id), cstr(module_id), raw or None, len(raw))


def c2d_subscribe_topic(device_id: str) -> str:
    return text_out(_lib.tether_c2d_subscribe_topic, cstr(device_id))


def method_response_topic(status: int, request_id: str) -> str:
    rid = request_id.encode("utf-8")
    return text_out(_lib.tether_method_response_topic, status, rid, len(rid))


def _decode(span: n.Span) -> Optional[str]:
    if not span.ptr:
        return None
    return text_out(_lib.tether_property_decode, ctypes.cast(span.ptr, ctypes.c_char_p), span.len)


def parse_c2d_topic(topic: str) -> Dict[str, Optional[str]]:
    """The decoded properties of a received cloud-to-device topic (``None`` for a bare key).
    Raises TetherError (TOPIC_INVALID) for anything else."""
    raw = topic.encode("utf-8")
    buf = ctypes.create_string_buffer(raw, len(raw))
    out = n.C2dTopic()
    n.check(_lib.tether_c2d_parse_topic(ctypes.cast(buf, ctypes.c_char_p), len(raw), byref(out)))
    props: Dict[str, Optional[str]] = {}
    if not out.properties.ptr:
        return props
    it = n.PropertyIter()
    n.check(_lib.tether_property_iter_init(byref(it), ctypes.cast(out.properties.ptr, ctypes.c_char_p), out.properties.len))
    prop = n.Property()
    while True:
        r = _lib.tether_property_iter_next(byref(it), byref(prop))
        if r == n.NOT_FOUND:
            break
        n.check(r)
        props[_decode(prop.key) or ""] = _decode(prop.value) if prop.has_value else None
    return props


def parse_method_topic(topic: str) -> "tuple[str, str]":
    """``(name, request_id)`` of a direct-method request topic."""
    raw = topic.encode("utf-8")
    buf = ctypes.create_string_buffer(raw, len(raw))
    out = n.MethodRequestTopic()
    n.check(_lib.tether_method_parse_request_topic(ctypes.cast(buf, ctypes.c_char_p), len(raw), byref(out)))
    return out.name.text() or "", out.request_id.text() or ""


def parse_twin_topic(topic: str) -> Dict[str, object]:
    """``{"kind": "response"|"desired", "status", "request_id", "version"}`` of a twin topic."""
    raw = topic.encode("utf-8")
    buf = ctypes.create_string_buffer(raw, len(raw))
    out = n.TwinTopic()
    n.check(_lib.tether_twin_parse_topic(ctypes.cast(buf, ctypes.c_char_p), len(raw), byref(out)))
    return {
        "kind": "response" if out.kind == n.TWIN_TOPIC_RESPONSE else "desired",
        "status": out.status,
        "request_id": out.request_id.text(),
        "version": out.version.text(),
    }


def parse_connection_string(text: str) -> Dict[str, Optional[str]]:
    """Validates a connection string; returns host name, device id and module id."""
    h = ctypes.c_void_p()
    n.check(_lib.tether_connection_string_parse(cstr(text), byref(h)))
    try:
        module = _optional(_lib.tether_connection_string_module_id, h)
        return {
            "host_name": text_out(_lib.tether_connection_string_host_name, h),
            "device_id": text_out(_lib.tether_connection_string_device_id, h),
            "module_id": module,
        }
    finally:
        _lib.tether_connection_string_free(h)


def _optional(fn: Callable[..., int], *args: Any) -> Optional[str]:
    try:
        return text_out(fn, *args)
    except n.TetherError as e:
        if e.code == n.NOT_FOUND:
            return None
        raise
