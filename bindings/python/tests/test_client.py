"""The device client end to end against real brokers: mosquitto configured like IoT Hub
(mosquitto_sub / mosquitto_pub as the service) and the local IoT Hub stand-in, which
verifies real SAS tokens made from a device key."""

import json
import os
import subprocess
import threading
import time
import urllib.parse
from collections import deque

import pytest

import tether
from conftest import DEVICE, HUB_HOST, KEY, Hub, sas_device, tether_cli

OTHER_KEY = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="


def bag(topic: str, prefix: str):
    assert topic.startswith(prefix), topic
    return dict(urllib.parse.parse_qsl(topic[len(prefix):], keep_blank_values=True))


def test_telemetry_with_properties_reaches_the_service(broker):
    sub = broker.subscribe(f"devices/{DEVICE}/messages/events/#")
    try:
        with broker.client() as client:
            client.connect(timeout=20)
            ids = [
                client.send(b'{"t":21}', properties={"alert": "high temp", "n": "1"},
                            content_type="application/json", content_encoding="utf-8"),
                client.send("second", properties={"n": "2", "flag": None}),
            ]
            assert len(set(ids)) == 2
            client.wait_acked(ids, timeout=10)
            assert client.inflight == 0
        got = sub.wait(2)
    finally:
        sub.close()
    prefix = f"devices/{DEVICE}/messages/events/"
    (t1, p1), (t2, p2) = got
    assert p1 == '{"t":21}' and p2 == "second"
    assert bag(t1, prefix) == {"alert": "high temp", "n": "1", "$.ct": "application/json", "$.ce": "utf-8"}
    assert "%24.ct=application%2Fjson" in t1 and "alert=high%20temp" in t1
    assert bag(t2, prefix) == {"n": "2", "flag": ""} and t2.endswith("&flag")


def test_wait_acked_times_out_when_the_hub_is_unreachable(broker):
    broker.stop()
    with broker.client(connect_timeout=1) as client:
        mid = client.send(b"x")
        start = time.monotonic()
        with pytest.raises(tether.TetherTimeout) as e:
            client.wait_acked([mid], timeout=1.5)
        assert e.value.name == "TETHER_RESULT_TIMEOUT"
        assert time.monotonic() - start < 10
        assert client.inflight == 1


def test_c2d_messages_arrive_with_decoded_properties(broker):
    with broker.client() as client:
        client.subscribe(c2d=True)
        client.connect(timeout=20)
        client.wait_acked(client.send(b"sync"))  # the subscription is in place once this round trip is done
        broker.publish(f"devices/{DEVICE}/messages/devicebound/%24.mid=m-1&color=dark%20blue&bare", "hello device")
        msg = client.receive_message(timeout=10)
        assert msg.data == b"hello device"
        assert msg.properties == {"$.mid": "m-1", "color": "dark blue", "bare": None}
        assert msg.message_id == "m-1"
        # Handler style: the message goes to the handler, not to the queue.
        seen = []
        client.on_message_received = seen.append
        broker.publish(f"devices/{DEVICE}/messages/devicebound/", '{"n":2}')
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            client.poll(0.5)
        assert [m.json() for m in seen] == [{"n": 2}]


def test_method_request_is_answered(broker):
    sub = broker.subscribe("$iothub/methods/res/#")
    try:
        with broker.client() as client:
            client.on_method_request_received = lambda req: req.respond(200, {"rebooted": req.json()["delay"]})
            client.connect(timeout=20)
            client.wait_acked(client.send(b"sync"))
            broker.publish("$iothub/methods/POST/reboot/?$rid=42", '{"delay":5}')
            deadline = time.monotonic() + 10
            while not sub.messages and time.monotonic() < deadline:
                client.poll(0.2)
            client.on_method_request_received = None
            broker.publish("$iothub/methods/POST/ping/?$rid=43", "")
            req = client.receive_method_request(timeout=10)
            assert (req.name, req.request_id, req.payload) == ("ping", "43", b"")
            req.respond(404, b'{"error":"unknown"}')
            for _ in range(5):
                client.poll(0.1)
        got = sub.wait(2)
    finally:
        sub.close()
    assert got[0] == ("$iothub/methods/res/200/?$rid=42", '{"rebooted": 5}')
    assert got[1] == ("$iothub/methods/res/404/?$rid=43", '{"error":"unknown"}')


class TwinService:
    """Plays IoT Hub's twin service with mosquitto_sub / mosquitto_pub: answers GET with a
    document and reported PATCHes with 204 and a growing version."""

    def __init__(self, broker, status=200):
        self.broker = broker
        self.status = status
        self.reported = {}
        self.version = 7
        self.sub = broker.subscribe("$iothub/twin/GET/#", "$iothub/twin/PATCH/properties/reported/#")
        self.handled = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            while self.handled < len(self.sub.messages):
                topic, payload = self.sub.messages[self.handled]
                self.handled += 1
                rid = topic.split("$rid=")[1]
                if topic.startswith("$iothub/twin/GET/"):
                    doc = {"desired": {"interval": 10, "$version": 3}, "reported": dict(self.reported)}
                    self.broker.publish(f"$iothub/twin/res/{self.status}/?$rid={rid}", json.dumps(doc))
                else:
                    self.reported.update(json.loads(payload))
                    self.version += 1
                    self.broker.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={self.version}", "")
            time.sleep(0.02)

    def close(self):
        self._stop = True
        self.thread.join()
        self.sub.close()


def test_twin_get_patch_reported_and_desired_patches(broker):
    service = TwinService(broker)
    try:
        with broker.client() as client:
            client.connect(timeout=20)
            twin = client.get_twin(timeout=10)
            assert twin == {"desired": {"interval": 10, "$version": 3}, "reported": {}}
            assert client.patch_reported({"firmware": "1.2.3", "ok": True}, timeout=10) == 8
            assert service.reported == {"firmware": "1.2.3", "ok": True}
            assert client.get_twin(timeout=10)["reported"] == {"firmware": "1.2.3", "ok": True}
            broker.publish("$iothub/twin/PATCH/properties/desired/?$version=4", '{"interval":30,"$version":4}')
            patch = client.receive_desired_patch(timeout=10)
            assert patch.version == 4 and patch.patch == {"interval": 30, "$version": 4}
    finally:
        service.close()


def test_twin_error_status_raises(broker):
    service = TwinService(broker, status=429)
    try:
        with broker.client() as client:
            client.connect(timeout=20)
            with pytest.raises(tether.TwinError) as e:
                client.get_twin(timeout=10)
            assert e.value.status == 429
    finally:
        service.close()


def test_from_environment_and_x509(broker, monkeypatch, pki):
    for k, v in broker.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TETHER_CERT_FILE", raising=False)
    with tether.DeviceClient.from_environment() as client:
        client.connect(timeout=20)
        client.wait_acked(client.send(b"from env"))
    monkeypatch.delenv("TETHER_CONNECTION_STRING")
    with pytest.raises(tether.TetherError) as e:
        tether.DeviceClient.from_environment()
    assert "TETHER_CONNECTION_STRING" in e.value.message
    # A certificate that does not match its key is refused before any connection.
    with pytest.raises(tether.TetherError) as e:
        tether.DeviceClient.from_x509("localhost", DEVICE, pki.path("device.pem"), pki.path("server.key"),
                                      ca_file=pki.path("ca.pem"), port=broker.port)
    assert e.value.name == "TETHER_RESULT_KEY_CERT_MISMATCH"


def test_x509_device_connects_and_sends(tmp_path, pki):
    from conftest import Mosquitto, tls_listener

    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite devices/%u/#\n")
    broker = Mosquitto(tmp_path, tls_listener(
        pki, f"require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n"))
    try:
        with tether.DeviceClient.from_x509("localhost", DEVICE, pki.path("device.pem"), pki.path("device.key"),
                                           ca_file=pki.path("ca.pem"), port=broker.port) as client:
            client.connect(timeout=20)
            client.wait_acked(client.send(b"x509"), timeout=10)
        assert f"as {DEVICE}" in broker.log() or DEVICE in broker.log()
    finally:
        broker.stop()


def test_pkcs11_device_connects_with_a_softhsm_key_and_names_a_wrong_pin(tmp_path, pki):
    import shutil
    import subprocess
    from conftest import Mosquitto, tls_listener

    module = "/usr/lib/softhsm/libsofthsm2.so"
    for tool, package in (("softhsm2-util", "softhsm2"), ("pkcs11-tool", "opensc")):
        assert shutil.which(tool), f"{tool} is not installed: apt-get install -y {package}"
    # A SoftHSM token in this test's folder. The module reads SOFTHSM2_CONF once per process,
    # when it is first loaded: this is the only test of the session that loads it.
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    os.environ["SOFTHSM2_CONF"] = str(conf)
    run = lambda *args: subprocess.run(args, env=env, check=True, capture_output=True)
    run("softhsm2-util", "--init-token", "--free", "--label", "py", "--pin", "1234", "--so-pin", "5678")
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", pki.path("device.key"), "-out", str(tmp_path / "k.p8"))
    run("softhsm2-util", "--import", str(tmp_path / "k.p8"), "--token", "py", "--label", "dev", "--id", "01",
        "--pin", "1234")
    run("openssl", "x509", "-in", pki.path("device.pem"), "-outform", "DER", "-out", str(tmp_path / "c.der"))
    run("pkcs11-tool", "--module", module, "--token-label", "py", "--login", "--pin", "1234",
        "--write-object", str(tmp_path / "c.der"), "--type", "cert", "--id", "01", "--label", "dev")
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite devices/%u/#\n")
    broker = Mosquitto(tmp_path, tls_listener(
        pki, f"require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n"))
    try:
        with tether.DeviceClient.from_pkcs11("localhost", DEVICE, module, "pkcs11:token=py;object=dev", "1234",
                                             ca_file=pki.path("ca.pem"), port=broker.port) as client:
            client.connect(timeout=20)
            client.wait_acked(client.send(b"pkcs11"), timeout=10)
        with pytest.raises(tether.TetherError) as e:
            tether.DeviceClient.from_pkcs11("localhost", DEVICE, module, "pkcs11:token=py;object=dev", "0000",
                                            ca_file=pki.path("ca.pem"), port=broker.port)
        assert e.value.name == "TETHER_RESULT_PKCS11_PIN_INCORRECT"
        assert "0000" not in e.value.message
    finally:
        broker.stop()


def test_local_hub_accepts_a_token_made_from_the_device_key_and_refuses_a_wrong_key(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-hub", KEY, OTHER_KEY)])
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-hub;SharedAccessKey={KEY}"
        with tether.DeviceClient.from_connection_string(cs, ca_file=hub.ca, port=hub.sas, token_ttl=60) as client:
            client.connect(timeout=30)
            client.wait_acked([client.send(b"hello hub", properties={"k": "v"}) for _ in range(3)], timeout=10)
        assert 'accepted "py-hub"' in hub.log(), hub.log()
        wrong = f"HostName={HUB_HOST};DeviceId=py-hub;SharedAccessKey=c2Vjb25kYXJ5IGtleSBvZiBzZW5zb3ItMSwgZGVtbyBvbmx5"
        with tether.DeviceClient.from_connection_string(wrong, ca_file=hub.ca, port=hub.sas) as client:
            with pytest.raises(tether.TetherError) as e:
                client.connect(timeout=20)
            assert e.value.name == "TETHER_RESULT_NOT_AUTHORIZED"
    finally:
        hub.stop()


def tracked_entries(client: tether.DeviceClient) -> int:
    """Entries in every collection the client object keeps (sets, dicts, deques, lists)."""
    return sum(len(v) for v in vars(client).values() if isinstance(v, (set, frozenset, dict, list, deque)))


def test_acknowledged_ids_are_not_kept_without_wait_acked(tmp_path):
    # Issue 11 defect 11: 3,000 sends nobody waited for left 3,000 ids in the client.
    hub = Hub(tmp_path, [sas_device("py-flat", KEY, OTHER_KEY)])
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-flat;SharedAccessKey={KEY}"
        with tether.DeviceClient.from_connection_string(cs, ca_file=hub.ca, port=hub.sas, max_inflight=64) as client:
            client.connect(timeout=30)
            ids = []
            for i in range(3000):
                while True:
                    try:
                        ids.append(client.send(b"%d" % i))
                        break
                    except tether.TetherError as e:
                        assert e.name == "TETHER_RESULT_QUEUE_FULL", e
                        client.poll(0.05)
                if i % 16 == 0:
                    while client.poll(0) is not None:  # take the acknowledgements delivered so far
                        pass
                    assert tracked_entries(client) <= 64 + 8, {k: len(v) for k, v in vars(client).items() if hasattr(v, "__len__")}
            deadline = time.monotonic() + 60
            while client.inflight and time.monotonic() < deadline:
                client.poll(0.2)
            assert client.inflight == 0
            assert tracked_entries(client) <= 8, {k: v for k, v in vars(client).items() if hasattr(v, "__len__")}
            # Waiting for long-acknowledged ids still works, and returns at once.
            start = time.monotonic()
            client.wait_acked(ids[:10] + ids[-10:], timeout=5)
            assert time.monotonic() - start < 1
            with pytest.raises(ValueError):
                client.wait_acked(ids[-1] + 1, timeout=1)
    finally:
        hub.stop()


def hub_service(hub, *args: str) -> str:
    """`tether hub ARGS[0] --dir DIR ARGS[1:]`: the stand-in's own service side."""
    out = subprocess.run([str(tether_cli()), "hub", args[0], "--dir", str(hub.dir), *args[1:]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_stand_in_serves_c2d_methods_and_twins_to_the_python_client(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-svc", KEY, OTHER_KEY)])
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-svc;SharedAccessKey={KEY}"
        with tether.DeviceClient.from_connection_string(cs, ca_file=hub.ca, port=hub.sas, token_ttl=600) as client:
            client.subscribe(c2d=True, methods=True, twin=True)
            client.connect(timeout=30)
            # The hub answers the twin itself; the GET's answer means the subscriptions are in place.
            assert client.get_twin(timeout=20) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
            assert client.patch_reported({"firmware": "2.0"}, timeout=20) == 2
            hub_service(hub, "c2d", "py-svc", "--property", "color=dark blue", "hello python")
            msg = client.receive_message(timeout=20)
            assert msg.data == b"hello python"
            assert msg.properties["color"] == "dark blue" and msg.message_id.startswith("c2d-")
            answer = {}
            call = threading.Thread(target=lambda: answer.update(out=hub_service(
                hub, "invoke", "py-svc", "ping", "--payload", '{"n":1}', "--timeout", "30", "--json")))
            call.start()
            req = client.receive_method_request(timeout=20)
            assert (req.name, req.json()) == ("ping", {"n": 1})
            req.respond(200, {"pong": True})
            deadline = time.monotonic() + 30
            while call.is_alive() and time.monotonic() < deadline:
                client.poll(0.2)
            call.join(1)
            assert json.loads(answer["out"]) == {"status": 200, "payload": {"pong": True}}
            hub_service(hub, "twin", "py-svc", "--desired", '{"rate":3}')
            patch = client.receive_desired_patch(timeout=20)
            assert patch.version == 2 and patch.patch == {"rate": 3, "$version": 2}
        twin = json.loads(hub_service(hub, "twin", "py-svc"))
        assert twin["properties"]["reported"]["firmware"] == "2.0"
    finally:
        hub.stop()
