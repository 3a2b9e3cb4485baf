"""The C ABI of libtether, seen through ctypes.

Everything that touches the native library lives here: finding and loading it, the
structures of ``include/tether.h``, one prototype (restype and argtypes) per function the
binding uses, the error type, and the ``Managed`` base class that owns a native handle.
``tests/test_header.py`` compares ``PROTOTYPES`` with the header's declarations.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_uint8,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

# ---------------------------------------------------------------------------------------
# Result codes (tether_result) and other constants from tether.h.

OK = 0
NULL_ARGUMENT = 1
INVALID_UTF8 = 2
INVALID_ARGUMENT = 3
BUFFER_TOO_SMALL = 4
INVALID_STATE = 7
NOT_FOUND = 8
TIMEOUT = 401

SUBSCRIBE_C2D = 1
SUBSCRIBE_METHODS = 2
SUBSCRIBE_TWIN = 4

TRANSPORT_MQTT = 0
TRANSPORT_WEBSOCKETS = 1
TRANSPORT_AUTO = 2

EVENT_NONE = 0
EVENT_CONNECTED = 1
EVENT_TELEMETRY_ACKED = 2
EVENT_C2D = 3
EVENT_METHOD_REQUEST = 4
EVENT_TWIN_RESPONSE = 5
EVENT_DESIRED_PATCH = 6
EVENT_SUBSCRIPTION_REFUSED = 7
EVENT_DISCONNECTED = 8
EVENT_UNDECODABLE = 9
EVENT_CERTIFICATE = 10

LOG_ERROR = 1
LOG_WARN = 2
LOG_INFO = 3
LOG_DEBUG = 4

THUMBPRINT_SHA1 = 1
THUMBPRINT_SHA256 = 2

TWIN_TOPIC_RESPONSE = 1
TWIN_TOPIC_DESIRED = 2

# The enum type of tether.h (`enum tether_result`, `enum tether_event_kind`): a C int.
c_enum = c_int


# ---------------------------------------------------------------------------------------
# Structures (field names and order as in tether.h; checked by tests/test_header.py).


class ClientOptions(Structure):
    _c_name_ = "tether_client_options"
    _fields_ = [
        ("port", c_uint16),
        ("keep_alive_secs", c_uint16),
        ("token_ttl_secs", c_uint32),
        ("max_inflight", c_uint32),
        ("connect_timeout_ms", c_uint32),
        ("retry_max_ms", c_uint32),
        ("websocket_port", c_uint16),
        ("transport", c_uint8),
    ]


class Event(Structure):
    _c_name_ = "tether_event"
    _fields_ = [
        ("kind", c_enum),
        ("message_id", c_uint64),
        ("name", c_char_p),
        ("request_id", c_char_p),
        ("status", c_uint16),
        ("version", c_uint64),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
        ("property_count", c_size_t),
        ("error", c_enum),
        ("will_retry", c_bool),
    ]


class Span(Structure):
    _c_name_ = "tether_span"
    _fields_ = [("ptr", c_void_p), ("len", c_size_t)]

    def text(self) -> Optional[str]:
        if not self.ptr:
            return None
        return ctypes.string_at(self.ptr, self.len).decode("utf-8")


class C2dTopic(Structure):
    _c_name_ = "tether_c2d_topic"
    _fields_ = [("device_id", Span), ("properties", Span)]


class TwinTopic(Structure):
    _c_name_ = "tether_twin_topic"
    _fields_ = [
        ("kind", c_uint32),
        ("status", c_uint16),
        ("request_id", Span),
        ("version", Span),
    ]


class MethodRequestTopic(Structure):
    _c_name_ = "tether_method_request"
    _fields_ = [("name", Span), ("request_id", Span)]


class PropertyIter(Structure):
    _c_name_ = "tether_property_iter"
    _fields_ = [
        ("bag", c_void_p),
        ("len", c_size_t),
        ("offset", c_size_t),
        ("done", c_bool),
    ]


class Property(Structure):
    _c_name_ = "tether_property"
    _fields_ = [("key", Span), ("value", Span), ("has_value", c_bool)]


class Defaults(Structure):
    _c_name_ = "tether_defaults"
    _fields_ = [
        ("port", c_uint16),
        ("keep_alive_secs", c_uint16),
        ("max_keep_alive_secs", c_uint16),
        ("token_ttl_secs", c_uint32),
        ("min_token_ttl_secs", c_uint32),
        ("renewal_margin_min_secs", c_uint32),
        ("renewal_margin_percent", c_uint32),
        ("max_inflight", c_uint32),
        ("max_unsent_bytes", c_size_t),
        ("connect_timeout_ms", c_uint32),
        ("retry_min_ms", c_uint32),
        ("retry_max_ms", c_uint32),
        ("retry_jitter_ms", c_uint32),
        ("dps_timeout_ms", c_uint32),
        ("dps_poll_interval_ms", c_uint32),
        ("dps_poll_max_ms", c_uint32),
        ("tls_check_timeout_ms", c_uint32),
    ]


STRUCTS = [ClientOptions, Defaults, Event, Span, C2dTopic, TwinTopic, MethodRequestTopic, PropertyIter, Property]

# typedef void (*tether_log_callback)(void *user_data, uint32_t level, const char *message,
#                                     size_t message_len);
LogCallback = CFUNCTYPE(None, c_void_p, c_uint32, c_void_p, c_size_t)
LogCallback._c_name_ = "tether_log_callback"  # type: ignore[attr-defined]

# ---------------------------------------------------------------------------------------
# Prototypes: name -> (restype, argtypes). Pointers to opaque handles are c_void_p;
# `const char *` text is c_char_p; byte buffers (`uint8_t *`) and text output buffers
# (`char *out`) are c_void_p so that bytes and ctypes buffers both pass.

_SZ = POINTER(c_size_t)
_H = c_void_p  # any opaque handle pointer
_HOUT = POINTER(c_void_p)  # `struct tether_x **` out parameter

PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    # library
    "tether_result_name": (c_char_p, [c_uint32]),
    "tether_last_error": (c_enum, [c_void_p, c_size_t, _SZ]),
    "tether_version": (c_char_p, []),
    "tether_live_handles": (c_size_t, []),
    "tether_defaults_get": (POINTER(Defaults), []),
    "tether_set_log_callback": (c_enum, [c_uint32, LogCallback, c_void_p]),
    # client
    "tether_client_options_default": (ClientOptions, []),
    "tether_client_new": (c_enum, [c_char_p, _H, POINTER(ClientOptions), _HOUT]),
    "tether_client_new_from_env": (c_enum, [_HOUT]),
    "tether_client_free": (None, [_H]),
    "tether_client_set_proxy": (c_enum, [_H, c_char_p]),
    "tether_client_connect": (c_enum, [_H, c_uint32]),
    "tether_client_send_telemetry": (
        c_enum,
        [_H, c_void_p, c_size_t, POINTER(c_char_p), POINTER(c_char_p), c_size_t, c_uint8,
         POINTER(c_uint64)],
    ),
    "tether_client_subscribe": (c_enum, [_H, c_uint32]),
    "tether_client_poll": (c_enum, [_H, c_uint32, POINTER(Event)]),
    "tether_client_event_property": (c_enum, [_H, c_size_t, POINTER(c_char_p), POINTER(c_char_p)]),
    "tether_client_twin_get": (c_enum, [_H, c_void_p, c_size_t, _SZ]),
    "tether_client_twin_patch_reported": (c_enum, [_H, c_void_p, c_size_t, c_void_p, c_size_t, _SZ]),
    "tether_client_respond_method": (c_enum, [_H, c_char_p, c_uint16, c_void_p, c_size_t]),
    "tether_client_set_keys": (c_enum, [_H, c_char_p, c_char_p]),
    "tether_client_disconnect": (None, [_H]),
    "tether_client_inflight": (c_size_t, [_H]),
    # certificate lifecycle (docs/certificates.md)
    "tether_credential_store_open": (c_enum, [c_char_p, _HOUT]),
    "tether_credential_store_free": (None, [_H]),
    "tether_credential_store_generation": (c_enum, [_H, POINTER(c_uint64)]),
    "tether_dps_provision_with_csr": (
        c_enum, [c_char_p, c_uint16, c_char_p, c_char_p, c_char_p, c_bool, _H, c_uint32, _H]
    ),
    "tether_client_new_from_credentials": (c_enum, [_H, _H, POINTER(ClientOptions), _HOUT]),
    "tether_client_set_certificate": (c_enum, [_H, _H, c_void_p, c_size_t, c_void_p, c_size_t]),
    "tether_client_renew_certificate": (c_enum, [_H]),
    # TLS configuration
    "tether_tls_config_builder_new": (_H, []),
    "tether_tls_config_builder_free": (None, [_H]),
    "tether_tls_config_builder_enable_tls13": (c_enum, [_H, c_bool]),
    "tether_tls_config_builder_add_ca": (c_enum, [_H, c_void_p, c_size_t]),
    "tether_tls_config_builder_add_ca_file": (c_enum, [_H, c_char_p]),
    "tether_tls_config_builder_set_client_cert_files": (c_enum, [_H, c_char_p, c_char_p]),
    "tether_tls_config_builder_set_client_pkcs11": (c_enum, [_H, c_char_p, c_char_p, c_char_p]),
    "tether_tls_config_builder_build": (c_enum, [_H, _HOUT]),
    "tether_tls_config_free": (None, [_H]),
    # identity primitives
    "tether_sas_token": (c_enum, [c_char_p, c_char_p, c_char_p, c_uint64, c_void_p, c_size_t, _SZ]),
    "tether_dps_derive_key": (c_enum, [c_char_p, c_char_p, c_void_p, c_size_t, _SZ]),
    "tether_dps_provision": (
        c_enum,
        [c_char_p, c_uint16, c_char_p, c_char_p, c_char_p, c_bool, _H, c_uint32,
         c_void_p, c_size_t, _SZ, c_void_p, c_size_t, _SZ],
    ),
    "tether_x509_thumbprint": (c_enum, [c_void_p, c_size_t, c_uint32, c_void_p, c_size_t, _SZ]),
    "tether_connection_string_parse": (c_enum, [c_char_p, _HOUT]),
    "tether_connection_string_free": (None, [_H]),
    "tether_connection_string_host_name": (c_enum, [_H, c_void_p, c_size_t, _SZ]),
    "tether_connection_string_device_id": (c_enum, [_H, c_void_p, c_size_t, _SZ]),
    "tether_connection_string_module_id": (c_enum, [_H, c_void_p, c_size_t, _SZ]),
    # topics and names
    "tether_mqtt_client_id": (c_enum, [c_char_p, c_char_p, c_void_p, c_size_t, _SZ]),
    "tether_mqtt_username": (
        c_enum, [c_char_p, c_char_p, c_char_p, c_char_p, c_char_p, c_char_p, c_void_p, c_size_t, _SZ]
    ),
    "tether_telemetry_topic": (c_enum, [c_char_p, c_char_p, c_char_p, c_size_t, c_void_p, c_size_t, _SZ]),
    "tether_c2d_subscribe_topic": (c_enum, [c_char_p, c_void_p, c_size_t, _SZ]),
    "tether_c2d_parse_topic": (c_enum, [c_char_p, c_size_t, POINTER(C2dTopic)]),
    "tether_twin_parse_topic": (c_enum, [c_char_p, c_size_t, POINTER(TwinTopic)]),
    "tether_method_parse_request_topic": (c_enum, [c_char_p, c_size_t, POINTER(MethodRequestTopic)]),
    "tether_method_response_topic": (c_enum, [c_uint16, c_char_p, c_size_t, c_void_p, c_size_t, _SZ]),
    "tether_property_iter_init": (c_enum, [POINTER(PropertyIter), c_char_p, c_size_t]),
    "tether_property_iter_next": (c_enum, [POINTER(PropertyIter), POINTER(Property)]),
    "tether_property_decode": (c_enum, [c_char_p, c_size_t, c_void_p, c_size_t, _SZ]),
}


# ---------------------------------------------------------------------------------------
# Finding and loading the library.

_PLATFORMS = {
    "x86_64": "linux-x86_64",
    "amd64": "linux-x86_64",
    "aarch64": "linux-aarch64",
    "arm64": "linux-aarch64",
    "armv7l": "linux-armv7l",
    "armv8l": "linux-armv7l",
}


def platform_dir() -> str:
    """The folder name of this machine's library inside the package (``linux-x86_64``...)."""
    machine = platform.machine().lower()
    try:
        return _PLATFORMS[machine]
    except KeyError:
        raise OSError(f"tether: no library for this machine ({sys.platform} {machine})") from None


def library_path() -> Path:
    """Where libtether is loaded from: ``$TETHER_LIBRARY``, else inside the package:
    ``tether/<platform>/libtether.so`` (a prebuilt library the wheel carries) or
    ``tether/_libtether*.so`` (the library ``pip install`` built with cargo)."""
    env = os.environ.get("TETHER_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise OSError(f"TETHER_LIBRARY={env} is not a file")
        return path.resolve()
    here = Path(__file__).resolve().parent
    path = here / platform_dir() / "libtether.so"
    if path.is_file():
        return path
    built = sorted(here.glob("_libtether*.so"))
    if built:
        return built[0]
    raise OSError(
        f"libtether.so not found: set TETHER_LIBRARY to a built library "
        f"(cargo build --lib gives target/debug/libtether.so) or install the package with "
        f"`pip install ./bindings/python` (builds it with cargo); looked in {path} and {here}"
    )


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()


# ---------------------------------------------------------------------------------------
# Errors.


def defaults() -> Dict[str, int]:
    """The library's defaults (``struct tether_defaults``: port, keep-alive, token lifetime,
    in-flight limit, timeouts in ms, back-off), by field name. Every default of this binding
    is read from here, so Python, C, the CLI and C# agree."""
    d = lib.tether_defaults_get().contents
    return {field[0]: int(getattr(d, field[0])) for field in Defaults._fields_}


def result_name(code: int) -> str:
    return str(lib.tether_result_name(code).decode("ascii"))


class TetherError(Exception):
    """A tether call failed. ``code`` is the ``tether_result`` number, ``name`` its
    constant (``TETHER_RESULT_CONNECTION_STRING_INVALID``) and ``message`` the library's
    explanation (it never contains keys or tokens)."""

    def __init__(self, code: int, message: str, name: Optional[str] = None):
        self.code = int(code)
        self.name = name or result_name(self.code)
        self.message = message
        super().__init__(f"{self.name} ({self.code}): {message}")


class TetherTimeout(TetherError, TimeoutError):
    """A wait in the binding ran out of time (code ``TETHER_RESULT_TIMEOUT``)."""

    def __init__(self, message: str):
        super().__init__(TIMEOUT, message)


class ClosedError(TetherError):
    """The object was closed; its native handle is gone (code
    ``TETHER_RESULT_INVALID_STATE``)."""

    def __init__(self, what: str):
        super().__init__(INVALID_STATE, f"{what} is closed")


def last_error() -> str:
    n = c_size_t(0)
    r = lib.tether_last_error(None, 0, ctypes.byref(n))
    if r == NOT_FOUND:
        return ""
    buf = ctypes.create_string_buffer(n.value + 1)
    if lib.tether_last_error(buf, len(buf), ctypes.byref(n)) != OK:
        return ""
    return buf.value.decode("utf-8", "replace")


def check(result: int) -> None:
    """Raises TetherError for a non-OK result, with the thread's last error message."""
    if result != OK:
        raise TetherError(result, last_error() or result_name(result))


# Initial capacity of text output buffers; a BUFFER_TOO_SMALL answer is retried with the
# size the library asks for (tests shrink this to prove it).
INITIAL_BUFFER = 256


def text_out(fn: Callable[..., int], *args: Any) -> str:
    """Calls ``fn(*args, out, cap, &out_len)`` and returns the text, growing the buffer
    once if the library answers BUFFER_TOO_SMALL."""
    cap = INITIAL_BUFFER
    n = c_size_t(0)
    for _ in range(2):
        buf = ctypes.create_string_buffer(cap)
        r = fn(*args, buf, cap, ctypes.byref(n))
        if r == OK:
            return buf.raw[: n.value].decode("utf-8")
        if r != BUFFER_TOO_SMALL:
            check(r)
        cap = n.value + 1
    raise TetherError(BUFFER_TOO_SMALL, "the library asked for a larger buffer twice")


def cstr(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else text.encode("utf-8")


# ---------------------------------------------------------------------------------------
# Managed handles.


_M = TypeVar("_M", bound="Managed")


class Managed:
    """Owns one native handle. ``close()`` frees it and is idempotent; the object is a
    context manager; ``__del__`` frees a handle that was never closed. Using a closed
    object raises ``ClosedError``."""

    _free: Callable[[Any], None]
    _handle: Optional[int] = None

    def __init__(self, handle: Optional[int]):
        if not handle:
            raise TetherError(INVALID_STATE, "no native handle")
        self._handle = handle

    def _ptr(self) -> int:
        if self._handle is None:
            raise ClosedError(type(self).__name__)
        return self._handle

    def _consume(self) -> int:
        """Takes the handle out of this object (ownership moves elsewhere)."""
        handle = self._ptr()
        self._handle = None
        return handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            type(self)._free(handle)

    def __enter__(self: _M) -> _M:
        self._ptr()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def live_handles() -> int:
    """How many native tether handles are alive in this process (for leak checks)."""
    return int(lib.tether_live_handles())


def version() -> str:
    return str(lib.tether_version().decode("ascii"))

