"""DPS provisioning through the binding, against a scripted DPS, then onward to the assigned
hub (the local IoT Hub stand-in)."""

import time

import pytest

import tether
from conftest import HUB_HOST, Hub, sas_device
from dps_responder import DpsResponder

SCOPE = "0neFEEDC0DE"
REG = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="


def test_provision_polls_after_retry_after_and_returns_the_assignment(pki):
    dps = DpsResponder(pki.path("server.pem"), pki.path("server.key"), [
        (202, 1, {"operationId": "op-7", "status": "assigning"}),
        (200, None, {"operationId": "op-7", "status": "assigned",
                     "registrationState": {"assignedHub": "hub-7.azure-devices.net", "deviceId": "sn-007"}}),
    ])
    key = tether.derive_key(GROUP_KEY, REG)
    start = time.monotonic()
    hub, device = tether.provision(SCOPE, REG, key, group_enrollment=True, endpoint="localhost",
                                   port=dps.port, ca_file=pki.path("ca.pem"), timeout=20)
    assert (hub, device) == ("hub-7.azure-devices.net", "sn-007")
    assert time.monotonic() - start >= 1.0
    assert dps.seen["client_id"] == REG
    assert dps.seen["username"].startswith(f"{SCOPE}/registrations/{REG}/api-version=2019-03-31")
    assert "skn=registration" in dps.seen["password"]
    assert f"sr={SCOPE}%2Fregistrations%2F{REG}" in dps.seen["password"]
    assert dps.seen["topics"] == [
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op-7",
    ]


def test_provision_names_a_refusal(pki):
    dps = DpsResponder(pki.path("server.pem"), pki.path("server.key"), [
        (401, None, {"errorCode": 401002, "message": "The device is unauthorized to register."}),
    ])
    with pytest.raises(tether.TetherError) as e:
        tether.provision(SCOPE, REG, tether.derive_key(GROUP_KEY, REG), group_enrollment=True,
                         endpoint="localhost", port=dps.port, ca_file=pki.path("ca.pem"), timeout=20)
    assert e.value.name == "TETHER_RESULT_NOT_AUTHORIZED"
    assert "unauthorized to register" in str(e.value)


def test_from_dps_provisions_then_sends_to_the_assigned_hub(tmp_path, pki):
    key = tether.derive_key(GROUP_KEY, REG)
    hub = Hub(tmp_path, [sas_device("dps-device", key, key)])
    try:
        dps = DpsResponder(pki.path("server.pem"), pki.path("server.key"), [
            (200, None, {"operationId": "op-1", "status": "assigned",
                         "registrationState": {"assignedHub": HUB_HOST, "deviceId": "dps-device"}}),
        ])
        # The scripted DPS uses the test PKI; the stand-in its own CA: trust both.
        both = tmp_path / "both-cas.pem"
        both.write_text(open(pki.path("ca.pem")).read() + open(hub.ca).read())
        with tether.DeviceClient.from_dps(SCOPE, REG, key, group_enrollment=True, endpoint="localhost",
                                          dps_port=dps.port, port=hub.sas, ca_file=str(both)) as client:
            client.connect(timeout=30)
            client.wait_acked([client.send(b"provisioned")], timeout=10)
        assert 'accepted "dps-device"' in hub.log(), hub.log()
    finally:
        hub.stop()


@pytest.mark.parametrize("hub_name, device_id, field, why", [
    ("hub-7.azure-devices.net;GatewayHostName=evil.example", "sn-007",
     "DPS reply: assignedHub: host name", "';' at offset 23"),
    ("hub-7.azure-devices.net", "sn-007;GatewayHostName=evil.example",
     "DPS reply: deviceId: device id", "a connection string cannot hold ';'"),
    ("hub-7.azure-devices.net", "sn-007;SharedAccessKey=AAAA",
     "DPS reply: deviceId: device id", "a connection string cannot hold ';'"),
])
def test_from_dps_refuses_an_assignment_that_would_inject_connection_string_fields(
        pki, hub_name, device_id, field, why):
    dps = DpsResponder(pki.path("server.pem"), pki.path("server.key"), [
        (200, None, {"operationId": "op-1", "status": "assigned",
                     "registrationState": {"assignedHub": hub_name, "deviceId": device_id}}),
    ])
    key = tether.derive_key(GROUP_KEY, REG)
    with pytest.raises(tether.TetherError) as e:
        tether.DeviceClient.from_dps(SCOPE, REG, key, group_enrollment=True, endpoint="localhost",
                                     dps_port=dps.port, port=1, ca_file=pki.path("ca.pem"),
                                     timeout=20)
    assert e.value.name == "TETHER_RESULT_ID_INVALID"
    assert str(e.value).startswith(field) or field in str(e.value), str(e.value)
    assert why in str(e.value)
    # The connection string path itself: an injected field never parses into another host.
    with pytest.raises(tether.TetherError):
        tether.parse_connection_string(f"HostName=h.example;DeviceId=a;b;SharedAccessKey={key}")
