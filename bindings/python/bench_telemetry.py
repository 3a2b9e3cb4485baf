"""Telemetry throughput from Python: tether's binding against the Azure IoT Python SDK
(azure-iot-device) in the same run, COUNT x 256-byte messages at QoS 1, over TLS 1.2 to a
local mosquitto configured like IoT Hub's endpoint (TLS 1.2 only, the hub's suites;
anonymous, as each client sends its own user name format).

    TETHER_LIBRARY=target/release/libtether.so python3 bindings/python/bench_telemetry.py [COUNT] [ROUNDS]

Both clients are timed from creation to the last acknowledgement (connect included) and
for the sending phase alone; the best of ROUNDS rounds is kept. Needs openssl, mosquitto
and azure-iot-device.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tether

CIPHERS = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384"
KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
DEVICE = "bench-dev"
PAYLOAD = b"x" * 256


def run(d, *args):
    subprocess.run(args, cwd=d, check=True, capture_output=True)


def broker(d: Path):
    for tool in ("openssl", "mosquitto"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (apt-get install -y {tool})")
    run(d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "30", "-subj", "/CN=Bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (d / "ext").write_text("extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    run(d, "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "30", "-extfile", "ext")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "mosquitto.conf").write_text(
        f"user root\npersistence false\nlog_dest none\nper_listener_settings true\n"
        f"listener {port} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\ncafile {d}/ca.pem\n"
        f"tls_version tlsv1.2\nciphers {CIPHERS}\nallow_anonymous true\n"
        f"max_inflight_messages 0\nmax_queued_messages 0\n"
    )
    (d / "tls12.cnf").write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n"
        "system_default = system_default_sect\n[system_default_sect]\nMinProtocol = TLSv1.2\nMaxProtocol = TLSv1.2\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")],
                            env=dict(os.environ, OPENSSL_CONF=str(d / "tls12.cnf")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    sys.exit("bench: mosquitto did not start")


def ours(port, token, ca, count):
    start = time.perf_counter()
    cs = f"HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={token}"
    with tether.DeviceClient.from_connection_string(cs, ca_file=ca, port=port, max_inflight=count) as client:
        client.connect(timeout=10)
        sending = time.perf_counter()
        ids = [client.send(PAYLOAD) for _ in range(count)]
        client.wait_acked(ids, timeout=60)
        end = time.perf_counter()
    return count / (end - start), count / (end - sending)


def sdk(port, token, ca, count):
    import paho.mqtt.client as mqtt
    from azure.iot.device import IoTHubDeviceClient, Message

    original = mqtt.Client.connect

    def connect(self, *a, **k):
        # The SDK always dials 8883; the local broker listens elsewhere.
        k["port"] = port
        return original(self, *a[:1], *a[2:], **k)

    mqtt.Client.connect = connect
    try:
        start = time.perf_counter()
        client = IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=open(ca).read())
        client.connect()
        sending = time.perf_counter()
        for _ in range(count):
            client.send_message(Message(PAYLOAD.decode()))  # returns once the PUBACK arrived
        end = time.perf_counter()
        client.shutdown()
    finally:
        mqtt.Client.connect = original
    return count / (end - start), count / (end - sending)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    try:
        import azure.iot.device  # noqa: F401
    except ImportError:
        sys.exit("bench: azure-iot-device is missing (pip install azure-iot-device)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        proc, port = broker(d)
        try:
            token = tether.sas_token(f"localhost/devices/{DEVICE}", KEY, ttl=24 * 3600)
            ca = str(d / "ca.pem")
            a = [ours(port, token, ca, count) for _ in range(rounds)]
            b = [sdk(port, token, ca, count) for _ in range(rounds)]
        finally:
            proc.terminate()
            proc.wait()
    best_a = (max(x[0] for x in a), max(x[1] for x in a))
    best_b = (max(x[0] for x in b), max(x[1] for x in b))
    print(f"library: {tether.library_path()}")
    print(f"{count} x {len(PAYLOAD)} B, QoS 1, TLS 1.2, best of {rounds}")
    print("| client | msg/s incl. connect | msg/s sending |")
    print("|---|---|---|")
    print(f"| tether (Python binding) | {best_a[0]:.0f} | {best_a[1]:.0f} |")
    print(f"| azure-iot-device {azure_version()} | {best_b[0]:.0f} | {best_b[1]:.0f} |")
    print(f"ratio: {best_a[0] / best_b[0]:.1f}x incl. connect, {best_a[1] / best_b[1]:.1f}x sending")


def azure_version():
    try:
        from importlib.metadata import version

        return version("azure-iot-device")
    except Exception:
        return ""


if __name__ == "__main__":
    main()
