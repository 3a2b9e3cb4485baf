"""Certificates issued by DPS from a CSR and renewed through the hub, through the binding,
against the local IoT Hub stand-in (`tether hub --dps-port`)."""

import os
import stat
import time

import tether
from conftest import Hub, free_port

SCOPE = "0ne0000CE27"
REG = "py-cert-device"
KEY = "Y2VydHMgdGVzdCBlbnJvbGxtZW50IGtleSwgdGVzdHMgb25seQ=="


def test_from_dps_with_a_csr_connects_with_the_issued_certificate_and_renews_it(tmp_path):
    dps_port = free_port()
    enrollment = {
        "registrationId": REG, "deviceId": REG, "provisioningStatus": "enabled",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY}},
        "clientCertificateIssuancePolicy": {"certificateAuthorityName": "stand-in"},
    }
    hub = Hub(tmp_path, [], dps={"idScope": SCOPE, "enrollments": [enrollment]},
              extra=["--dps-port", str(dps_port), "--issued-validity", "3600"])
    creds = tmp_path / "creds"
    try:
        client = tether.DeviceClient.from_dps(
            SCOPE, REG, KEY, csr=True, credentials_dir=str(creds), endpoint="localhost",
            dps_port=dps_port, port=hub.x509, ca_file=hub.ca, timeout=30,
        )
        assert (creds / "gen-1" / "chain.pem").is_file()
        assert stat.S_IMODE(os.stat(creds / "gen-1" / "key.pem").st_mode) == 0o600
        seen = []
        client.on_certificate = seen.append
        client.connect(timeout=20)
        first = client.send(b"before renewal")
        client.wait_acked(first, timeout=20)
        client.renew_certificate()
        deadline = time.monotonic() + 40
        while not any(c.kind == "swapped" for c in seen):
            assert time.monotonic() < deadline, f"no swap: {seen}\n{hub.log()}"
            client.poll(0.2)
        kinds = [c.kind for c in seen]
        assert kinds[:3] == ["renewal_requested", "issued", "swapped"], kinds
        assert seen[2].not_after > time.time()
        # The renewed certificate is stored as the next generation and carries the traffic.
        assert (creds / "gen-2" / "chain.pem").is_file()
        after = client.send(b"after renewal")
        client.wait_acked(after, timeout=20)
        client.close()
        # A client made again from the folder uses the renewed certificate.
        again = tether.DeviceClient.from_credentials(str(creds), ca_file=hub.ca, port=hub.x509)
        again.connect(timeout=20)
        again.wait_acked(again.send(b"restarted"), timeout=20)
        again.close()
    finally:
        hub.stop()
