"""A plain MQTT 3.1.1 device (paho-mqtt) driven by JSON lines on stdin; reports JSON lines.

argv: port ca client_id username password [persistent]
stdin: {"sub": FILTER, "qos": Q} | {"pub": TOPIC, "payload": TEXT, "qos": 0|1|2, "retain": BOOL, "size": N}
stdout: {"connected": rc} {"suback": [codes]} {"puback": mid} {"msg": topic, "payload": text}
        {"disconnected": rc}
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

port, ca, client_id, username, password = sys.argv[1:6]
lock = threading.Lock()


def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


persistent = sys.argv[6:7] == ["persistent"]
client = mqtt.Client(client_id=client_id, clean_session=not persistent, protocol=mqtt.MQTTv311)
client.username_pw_set(username, password)
client.tls_set(ca_certs=ca)
client.on_connect = lambda c, u, f, rc: say({"connected": rc})
client.on_subscribe = lambda c, u, mid, granted: say({"suback": list(granted)})
client.on_publish = lambda c, u, mid: say({"puback": mid})
client.on_message = lambda c, u, m: say(
    {"msg": m.topic, "payload": m.payload.decode("utf-8", "replace"), "retain": bool(m.retain)}
)
client.on_disconnect = lambda c, u, rc: say({"disconnected": rc})
client.connect("localhost", int(port), keepalive=60)
client.loop_start()
for line in sys.stdin:
    cmd = json.loads(line)
    if "sub" in cmd:
        client.subscribe(cmd["sub"], cmd.get("qos", 1))
    elif "pub" in cmd:
        payload = cmd.get("payload", "")
        if "size" in cmd:
            payload = "x" * cmd["size"]
        client.publish(cmd["pub"], payload, qos=cmd.get("qos", 1), retain=cmd.get("retain", False))
client.disconnect()
client.loop_stop()
