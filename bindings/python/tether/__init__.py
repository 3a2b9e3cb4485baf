"""tether for Python: Azure IoT Hub devices over MQTT with IoT Hub's TLS 1.2 policy,
SAS or X.509, through libtether's C ABI (ctypes).

    from tether import DeviceClient

    with DeviceClient.from_environment() as client:      # TETHER_CONNECTION_STRING, ...
        client.connect()
        mid = client.send(b'{"t":21}', content_type="application/json", content_encoding="utf-8")
        client.wait_acked([mid])

The library is loaded from ``$TETHER_LIBRARY`` or from ``tether/<platform>/libtether.so``
inside this package. Diagnostics go to the ``logging`` logger ``tether``.
"""

from ._native import (
    LOG_DEBUG,
    LOG_ERROR,
    LOG_INFO,
    LOG_WARN,
    ClosedError,
    TetherError,
    TetherTimeout,
    defaults,
    library_path,
    live_handles,
    result_name,
    version,
)
from ._logging import set_log_level
from .client import (
    Acked,
    Connected,
    DesiredPatch,
    DeviceClient,
    Disconnected,
    Message,
    MethodRequest,
    SubscriptionRefused,
    TlsConfig,
    TwinError,
    TwinResponse,
    Undecodable,
    Certificate,
)
from .primitives import (
    c2d_subscribe_topic,
    client_id,
    derive_key,
    method_response_topic,
    parse_c2d_topic,
    parse_connection_string,
    parse_method_topic,
    parse_twin_topic,
    sas_token,
    telemetry_topic,
    thumbprint,
    username,
)
from .provisioning import provision, provision_with_csr

__version__ = "0.1.0"

__all__ = [
    "DeviceClient", "Message", "MethodRequest", "DesiredPatch", "TwinResponse", "Connected",
    "Acked", "SubscriptionRefused", "Disconnected", "Undecodable", "TlsConfig",
    "TetherError", "TetherTimeout", "ClosedError", "TwinError",
    "sas_token", "derive_key", "thumbprint", "client_id", "username", "telemetry_topic",
    "c2d_subscribe_topic", "method_response_topic", "parse_c2d_topic", "parse_method_topic",
    "parse_twin_topic", "parse_connection_string", "provision", "provision_with_csr", "Certificate",
    "live_handles", "library_path", "result_name", "version", "set_log_level",
    "LOG_ERROR", "LOG_WARN", "LOG_INFO", "LOG_DEBUG",
]
