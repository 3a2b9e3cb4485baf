"""Published vectors (IOTHUB.md), errors and buffer sizing of the primitives."""

import base64
import hashlib
import hmac
import urllib.parse

import pytest

import tether
from tether import _native

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="


def test_sas_signature_matches_published_vector():
    # The published HMAC vector fixes the signing primitive; the token must carry exactly
    # that HMAC over its own string to sign.
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), b"sign this message", hashlib.sha256).digest())
    assert sig == b"8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="
    token = tether.sas_token("myiothub.azure-devices.net/devices/my_device", KEY, expiry=1578941692)
    prefix = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig="
    assert token.startswith(prefix) and token.endswith("&se=1578941692")
    to_sign = b"myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"
    expected = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign, hashlib.sha256).digest()).decode()
    assert token[len(prefix):-len("&se=1578941692")] == urllib.parse.quote(expected, safe="")


def test_sas_token_for_a_module_and_a_policy():
    token = tether.sas_token("myiothub.azure-devices.net/devices/my_device/modules/my_module", KEY,
                             expiry=1578941692)
    to_sign = b"myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module\n1578941692"
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign, hashlib.sha256).digest()).decode()
    assert f"&sig={urllib.parse.quote(sig, safe='')}&" in token
    dps = tether.sas_token("0neFEEDC0DE/registrations/dev1", KEY, expiry=1578941692, key_name="registration")
    assert dps.endswith("&se=1578941692&skn=registration")


def test_dps_derived_key_matches_published_vector():
    assert tether.derive_key(
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
        "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
    ) == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def test_names_and_topics_match_published_vectors():
    assert tether.client_id("my_device") == "my_device"
    assert tether.client_id("my_device", "my_module_id") == "my_device/my_module_id"
    assert tether.username("myiothub.azure-devices.net", "my_device", api_version="2020-09-30",
                           client_type="azsdk-c/1.6.0-beta.1") == \
        "myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1"
    assert tether.telemetry_topic("my_device") == "devices/my_device/messages/events/"
    assert tether.telemetry_topic("my_device", {"key": "value", "key_two": "value2"}, module_id="my_module_id") == \
        "devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2"
    assert tether.telemetry_topic("d", {"$.ct": "application/json", "flag": None}) == \
        "devices/d/messages/events/%24.ct=application%2Fjson&flag"
    assert tether.c2d_subscribe_topic("my_device") == "devices/my_device/messages/devicebound/#"
    assert tether.method_response_topic(200, "2") == "$iothub/methods/res/200/?$rid=2"
    assert tether.method_response_topic(65535, "2") == "$iothub/methods/res/65535/?$rid=2"


def test_received_topics_parse_to_published_values():
    props = tether.parse_c2d_topic(
        "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound"
        "&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla")
    assert props == {"$.to": "/devices/useragent_c/messages/deviceBound", "abc": "123",
                     "ghi": "/some/thing", "jkl": "/some/thing/?bla=bla"}
    assert tether.parse_c2d_topic("devices/d/messages/devicebound/bare&empty=") == {"bare": None, "empty": ""}
    assert tether.parse_method_topic("$iothub/methods/POST/TestMethod/?$rid=1") == ("TestMethod", "1")
    assert tether.parse_twin_topic("$iothub/twin/res/204/?$rid=id_one&$version=16") == \
        {"kind": "response", "status": 204, "request_id": "id_one", "version": "16"}
    assert tether.parse_twin_topic("$iothub/twin/PATCH/properties/desired/?$version=id_one")["kind"] == "desired"


def test_thumbprint_of_a_certificate(pki):
    pem = open(pki.path("device.pem"), "rb").read()
    der = base64.b64decode("".join(l for l in pem.decode().splitlines() if not l.startswith("-----")))
    assert tether.thumbprint(pem) == hashlib.sha256(der).hexdigest().upper()
    assert tether.thumbprint(pki.path("device.pem"), "sha1") == hashlib.sha1(der).hexdigest().upper()
    with pytest.raises(ValueError):
        tether.thumbprint(pem, "md5")
    with pytest.raises(tether.TetherError) as e:
        tether.thumbprint(b"not a certificate")
    assert e.value.name == "TETHER_RESULT_CERT_MALFORMED" and e.value.code == 107


def test_bad_connection_string_raises_with_code_name_and_message():
    with pytest.raises(tether.TetherError) as e:
        tether.DeviceClient.from_connection_string("HostName=h.azure-devices.net;SharedAccessKey=" + KEY)
    assert e.value.code == 201
    assert e.value.name == "TETHER_RESULT_CONNECTION_STRING_INVALID"
    assert "DeviceId" in e.value.message
    assert "TETHER_RESULT_CONNECTION_STRING_INVALID (201)" in str(e.value)
    with pytest.raises(tether.TetherError) as e:
        tether.parse_connection_string("HostName=h;DeviceId=d;SharedAccessKey=Zm9v!c2VjcmV0ZmllbGQ=")
    assert e.value.name == "TETHER_RESULT_SAS_KEY_INVALID"
    assert "c2VjcmV0ZmllbGQ" not in str(e.value)  # the key is never echoed


def test_bad_inputs_raise_tether_errors():
    with pytest.raises(tether.TetherError) as e:
        tether.sas_token("h/devices/bad id", KEY, expiry=1578941692)
    assert e.value.name == "TETHER_RESULT_ID_INVALID"
    with pytest.raises(tether.TetherError) as e:
        tether.derive_key("!!!", "dev")
    assert e.value.name == "TETHER_RESULT_SAS_KEY_INVALID"
    with pytest.raises(tether.TetherError) as e:
        tether.parse_method_topic("devices/d/messages/events/")
    assert e.value.name == "TETHER_RESULT_TOPIC_INVALID"


def test_parse_connection_string():
    assert tether.parse_connection_string(f"HostName=h.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey={KEY}") \
        == {"host_name": "h.azure-devices.net", "device_id": "d", "module_id": "m"}
    assert tether.parse_connection_string(f"HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}")[
        "module_id"] is None


def test_too_small_buffers_are_grown_inside_the_binding(monkeypatch):
    expected = tether.sas_token("myiothub.azure-devices.net/devices/my_device", KEY, expiry=1578941692)
    calls = []
    real = _native.lib.tether_sas_token

    def counting(*args):
        r = real(*args)
        calls.append(r)
        return r

    monkeypatch.setattr(_native, "INITIAL_BUFFER", 1)
    assert tether.sas_token("myiothub.azure-devices.net/devices/my_device", KEY, expiry=1578941692) == expected
    assert tether.derive_key(
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
        "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6") == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
    # The first attempt really was refused as too small, and the retry succeeded.
    out = _native.text_out(counting, b"myiothub.azure-devices.net/devices/my_device", KEY.encode(), None, 1578941692)
    assert out == expected
    assert calls == [_native.BUFFER_TOO_SMALL, _native.OK]


def test_result_names_and_version():
    assert tether.result_name(0) == "TETHER_RESULT_OK"
    assert tether.result_name(404) == "TETHER_RESULT_CONNECTION_CLOSED"
    assert tether.version() == "0.1.0"
