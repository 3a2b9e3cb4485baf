"""A device written with the official Azure IoT Python SDK (azure-iot-device).

argv: connection_string ca port [websockets]
(websockets: MQTT over WebSockets, `websockets=True`; `port` is then the WebSocket port)
Answers every direct method with 200 and {"echo": <request payload>, "method": <name>},
reports {"fw": "1.2.3"}, and prints one JSON line per event:
{"ready"} {"twin": doc} {"c2d": text, "properties": {...}} {"method": name, "payload": p}
{"desired": patch}. Runs until stdin closes.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from azure.iot.device import IoTHubDeviceClient, MethodResponse

conn, ca, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
websockets = sys.argv[4:5] == ["websockets"]
lock = threading.Lock()

original = mqtt.Client.connect


def connect(self, *a, **k):
    # The SDK always dials 8883 (443 over WebSockets); the stand-in listens elsewhere.
    k["port"] = port
    return original(self, *a[:1], *a[2:], **k)


mqtt.Client.connect = connect


def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


client = IoTHubDeviceClient.create_from_connection_string(
    conn, server_verification_cert=open(ca).read(), websockets=websockets
)
client.connect()


def on_message(m):
    say({"c2d": m.data.decode("utf-8", "replace"), "properties": dict(m.custom_properties),
         "message_id": m.message_id})


def on_method(req):
    say({"method": req.name, "payload": req.payload})
    client.send_method_response(
        MethodResponse.create_from_method_request(req, 200, {"echo": req.payload, "method": req.name})
    )


client.on_message_received = on_message
client.on_method_request_received = on_method
client.on_twin_desired_properties_patch_received = lambda p: say({"desired": p})
say({"twin": client.get_twin()})
client.patch_twin_reported_properties({"fw": "1.2.3"})
say({"ready": True})
sys.stdin.read()
client.shutdown()
