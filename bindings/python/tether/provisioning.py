"""Device Provisioning Service: which IoT Hub does this device belong to?"""

import ctypes
from ctypes import byref, c_size_t, c_uint64, c_void_p
from typing import Optional, Tuple

from ._native import check, cstr, defaults, lib as _lib
from .client import TlsConfig


def provision(
    id_scope: str,
    registration_id: str,
    device_key: Optional[str] = None,
    *,
    group_enrollment: bool = False,
    endpoint: Optional[str] = None,
    port: Optional[int] = None,
    ca_file: Optional[str] = None,
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
    timeout: Optional[float] = None,
) -> Tuple[str, str]:
    """Registers the device with DPS and returns ``(assigned_hub, device_id)``.

    TLS 1.2 under the IoT Hub policy to ``endpoint`` (default
    ``global.azure-devices-provisioning.net``), MQTT as the registration id, register, then
    poll while DPS answers 202 (waiting its retry-after), all within ``timeout`` seconds.
    ``port`` and ``timeout`` default to the library's (:func:`tether.defaults`: ``port``,
    ``dps_timeout_ms``).
    Authenticates with ``device_key`` (an individual enrollment's key, or for a group
    enrollment the key from :func:`tether.derive_key` with ``group_enrollment=True``) or, when
    it is ``None``, with ``cert_file`` and ``key_file``. Raises :class:`tether.TetherError`
    naming DPS's refusal."""
    lib_defaults = defaults()
    if port is None:
        port = lib_defaults["port"]
    timeout_ms = lib_defaults["dps_timeout_ms"] if timeout is None else max(1, int(timeout * 1000))
    tls = None
    if ca_file or cert_file or key_file:
        tls = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    try:
        hub = ctypes.create_string_buffer(256)
        device = ctypes.create_string_buffer(136)
        hub_len, device_len = c_size_t(0), c_size_t(0)
        check(
            _lib.tether_dps_provision(
                cstr(endpoint), port, cstr(id_scope), cstr(registration_id), cstr(device_key),
                group_enrollment, tls._ptr() if tls is not None else None,
                timeout_ms, hub, len(hub), byref(hub_len), device, len(device),
                byref(device_len),
            )
        )
        return hub.raw[: hub_len.value].decode(), device.raw[: device_len.value].decode()
    finally:
        if tls is not None:
            tls.close()


def provision_with_csr(
    id_scope: str,
    registration_id: str,
    credentials_dir: str,
    device_key: Optional[str] = None,
    *,
    group_enrollment: bool = False,
    endpoint: Optional[str] = None,
    port: Optional[int] = None,
    ca_file: Optional[str] = None,
    cert_file: Optional[str] = None,
    key_file: Optional[str] = None,
    timeout: Optional[float] = None,
) -> int:
    """Registers the device with DPS and has DPS issue its certificate from a CSR (a fresh
    P-256 key made by the library; api-version 2025-07-01-preview). The issued chain is
    checked (for that key, valid now, chaining to a trusted root: the IoT Hub roots plus
    ``ca_file``) and stored with the key in ``credentials_dir`` (written atomically; the key
    file is mode 0600). Returns the stored generation. Authentication, ``port`` and
    ``timeout`` as :func:`provision`."""
    lib_defaults = defaults()
    if port is None:
        port = lib_defaults["port"]
    timeout_ms = lib_defaults["dps_timeout_ms"] if timeout is None else max(1, int(timeout * 1000))
    tls = None
    if ca_file or cert_file or key_file:
        tls = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    store = c_void_p()
    try:
        check(_lib.tether_credential_store_open(cstr(credentials_dir), byref(store)))
        check(
            _lib.tether_dps_provision_with_csr(
                cstr(endpoint), port, cstr(id_scope), cstr(registration_id), cstr(device_key),
                group_enrollment, tls._ptr() if tls is not None else None,
                timeout_ms, store,
            )
        )
        generation = c_uint64(0)
        check(_lib.tether_credential_store_generation(store, byref(generation)))
        return int(generation.value)
    finally:
        if store.value:
            _lib.tether_credential_store_free(store)
        if tls is not None:
            tls.close()
