"""MQTT over WebSockets and HTTP CONNECT proxies from Python: the stand-in's WebSocket
listener (`tether hub --ws-port`) reached through a real proxy (tinyproxy) with Basic
credentials; telemetry, C2D, a method and the twin; a proxy's refusal named."""

import json
import threading
import time

import pytest

import tether
from conftest import HUB_HOST, KEY, Hub, Tinyproxy, free_port, sas_device
from test_client import OTHER_KEY, hub_service

USER = ("py", "py-proxy-pass")


def test_websockets_through_a_proxy_carry_telemetry_c2d_methods_and_twin(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-ws", KEY, OTHER_KEY)], websockets=True)
    proxy = Tinyproxy(tmp_path, [hub.ws], USER)
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-ws;SharedAccessKey={KEY};GatewayHostName=localhost"
        with tether.DeviceClient.from_connection_string(
            cs, ca_file=hub.ca, transport="websockets", websocket_port=hub.ws, proxy=proxy.url(USER)
        ) as client:
            client.subscribe(c2d=True, methods=True, twin=True)
            client.connect(timeout=30)
            client.wait_acked(client.send(b'{"t":1}'), timeout=20)
            assert client.get_twin(timeout=20) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
            assert client.patch_reported({"over": "websockets"}, timeout=20) == 2
            hub_service(hub, "c2d", "py-ws", "hello over 443")
            assert client.receive_message(timeout=20).data == b"hello over 443"
            answer = {}
            call = threading.Thread(target=lambda: answer.update(out=hub_service(
                hub, "invoke", "py-ws", "ping", "--payload", '{"n":2}', "--timeout", "30", "--json")))
            call.start()
            req = client.receive_method_request(timeout=20)
            req.respond(200, {"pong": 2})
            deadline = time.monotonic() + 30
            while call.is_alive() and time.monotonic() < deadline:
                client.poll(0.2)
            call.join(1)
            assert json.loads(answer["out"]) == {"status": 200, "payload": {"pong": 2}}
        assert proxy.connects() == [f"localhost:{hub.ws}"]
        twin = json.loads(hub_service(hub, "twin", "py-ws"))
        assert twin["properties"]["reported"]["over"] == "websockets"
    finally:
        proxy.stop()
        hub.stop()


def test_a_proxy_refusal_is_named_and_the_password_is_not(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-ws2", KEY, OTHER_KEY)], websockets=True)
    proxy = Tinyproxy(tmp_path, [hub.ws], USER)
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-ws2;SharedAccessKey={KEY};GatewayHostName=localhost"
        with tether.DeviceClient.from_connection_string(
            cs, ca_file=hub.ca, transport="websockets", websocket_port=hub.ws,
            proxy=proxy.url(("py", "not-the-password")),
        ) as client:
            with pytest.raises(tether.TetherError) as raised:
                client.connect(timeout=10)
            assert raised.value.code == 406  # TETHER_RESULT_PROXY_AUTH_REQUIRED
            assert "401 Unauthorized" in str(raised.value) and "not-the-password" not in str(raised.value)
        with pytest.raises(ValueError):
            tether.DeviceClient.from_connection_string(cs, transport="pigeon")
    finally:
        proxy.stop()
        hub.stop()


def test_auto_falls_back_to_websockets(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-auto", KEY, OTHER_KEY)], websockets=True)
    try:
        cs = f"HostName={HUB_HOST};DeviceId=py-auto;SharedAccessKey={KEY};GatewayHostName=localhost"
        with tether.DeviceClient.from_connection_string(
            cs, ca_file=hub.ca, port=free_port(), transport="auto", websocket_port=hub.ws, proxy=""
        ) as client:
            client.connect(timeout=30)
            assert client.get_twin(timeout=20)["reported"] == {"$version": 1}
    finally:
        hub.stop()
