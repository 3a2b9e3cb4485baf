"""Real peers for the Python tests: a test PKI made with openssl, mosquitto configured like
IoT Hub's MQTT endpoint (TLS 1.2 only, the hub's suites, user name + SAS token, per-device
ACL) with mosquitto_sub / mosquitto_pub playing the service, and the local IoT Hub stand-in
(`tether hub`) that verifies real SAS tokens.

A missing peer is a failure naming the package to install, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import tether

DEVICE = "py-dev"
KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
SERVICE_PASSWORD = "service-secret"
HUB_CIPHERS = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384"
)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: install the {package} package (apt-get install -y {package})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def openssl(cwd: Path, *args: str) -> None:
    require("openssl", "openssl")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a device certificate."""

    def __init__(self, d: Path):
        self.dir = d
        openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "3650", "-subj", "/CN=Python Test Root CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.leaf("server", "localhost", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        self.leaf("device", DEVICE, "clientAuth", "")

    def leaf(self, name: str, cn: str, usage: str, extra: str) -> None:
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"extendedKeyUsage={usage}\n{extra}\n")
        openssl(self.dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}")
        openssl(self.dir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "365", "-extfile", str(ext))

    def path(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls12_cap(d: Path) -> Path:
    conf = d / "openssl-tls12.cnf"
    conf.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        "[system_default_sect]\nMinProtocol = TLSv1.2\nMaxProtocol = TLSv1.2\n"
    )
    return conf


class Mosquitto:
    def __init__(self, d: Path, listeners: str):
        require("mosquitto", "mosquitto")
        self.dir = d
        self.port = free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(
            "user root\npersistence false\nlog_dest stderr\nlog_type all\nper_listener_settings true\n"
            + listeners.replace("{port}", str(self.port))
        )
        self.log_path = d / "mosquitto.log"
        env = dict(os.environ, OPENSSL_CONF=str(tls12_cap(d)))
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"),
        )
        if not wait_for_port(self.port):
            self.stop()
            pytest.fail(f"mosquitto did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()


def tls_listener(pki: Pki, extra: str) -> str:
    return (
        f"listener {{port}} 127.0.0.1\ncertfile {pki.path('server.pem')}\nkeyfile {pki.path('server.key')}\n"
        f"cafile {pki.path('ca.pem')}\ntls_version tlsv1.2\nciphers {HUB_CIPHERS}\n{extra}\n"
    )


class Broker:
    """mosquitto accepting DEVICE with one ready SAS token, and a `service` user that reads
    and writes every device's topics and `$iothub/#`."""

    def __init__(self, d: Path, pki: Pki):
        require("mosquitto_passwd", "mosquitto")
        self.pki = pki
        self.token = tether.sas_token(f"localhost/devices/{DEVICE}", KEY, ttl=3600)
        self.username = tether.username("localhost", DEVICE, client_type=f"tether/{tether.version()}")
        passwords = d / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), self.username, self.token], check=True)
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), "service", SERVICE_PASSWORD], check=True)
        acl = d / "acl"
        acl.write_text(
            f"user {self.username}\ntopic readwrite devices/{DEVICE}/#\ntopic readwrite $iothub/#\n"
            "user service\ntopic readwrite devices/#\ntopic readwrite $iothub/#\n"
        )
        self.mosquitto = Mosquitto(
            d, tls_listener(pki, f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n")
        )
        self.port = self.mosquitto.port
        self.connection_string = f"HostName=localhost;DeviceId={DEVICE};SharedAccessSignature={self.token}"
        self.ca = pki.path("ca.pem")

    def client(self, **kw) -> tether.DeviceClient:
        return tether.DeviceClient.from_connection_string(
            self.connection_string, ca_file=self.ca, port=self.port, **kw
        )

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(
            TETHER_CONNECTION_STRING=self.connection_string, TETHER_CA_FILE=self.ca, TETHER_PORT=str(self.port)
        )
        env.pop("TETHER_CERT_FILE", None)
        env.pop("TETHER_KEY_FILE", None)
        return env

    def _service_args(self) -> List[str]:
        return ["-h", "localhost", "-p", str(self.port), "--cafile", self.ca, "-u", "service", "-P", SERVICE_PASSWORD]

    def publish(self, topic: str, payload: str, qos: int = 1) -> None:
        require("mosquitto_pub", "mosquitto-clients")
        subprocess.run(
            ["mosquitto_pub", *self._service_args(), "-i", f"svc-pub-{time.monotonic_ns()}",
             "-t", topic, "-m", payload, "-q", str(qos)],
            check=True, capture_output=True, timeout=20,
        )

    def subscribe(self, *topics: str) -> "Subscriber":
        return Subscriber(self, topics)

    def stop(self) -> None:
        self.mosquitto.stop()


class Subscriber:
    """mosquitto_sub as the service; `messages` collects (topic, payload); starts only
    once the broker acknowledged the subscription."""

    def __init__(self, broker: Broker, topics):
        require("mosquitto_sub", "mosquitto-clients")
        args = ["stdbuf", "-oL", "mosquitto_sub", *broker._service_args(), "-i", f"svc-sub-{time.monotonic_ns()}", "-d",
                "-q", "1", "-F", "MSG\t%t\t%p"]
        for t in topics:
            args += ["-t", t]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.messages: List[tuple] = []
        self.lines: List[str] = []
        self._subacked = threading.Event()
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._subacked.wait(10):
            self.close()
            pytest.fail("mosquitto_sub did not subscribe:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cv:
                self.lines.append(line)
                if "SUBACK" in line:
                    self._subacked.set()
                if line.startswith("MSG\t"):
                    _, topic, payload = line.split("\t", 2)
                    self.messages.append((topic, payload))
                self._cv.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> List[tuple]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"service got {len(self.messages)} of {count} messages:\n" + "\n".join(self.lines))
                self._cv.wait(left)
            return list(self.messages)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def broker(tmp_path, pki):
    b = Broker(tmp_path, pki)
    yield b
    b.stop()


# ---------------------------------------------------------------------------------------
# The local IoT Hub stand-in.

HUB_HOST = "localhost"  # the hub host name the device connects to (its certificate is for localhost)


def tether_cli() -> Path:
    exe = os.environ.get("TETHER_BIN")
    path = Path(exe) if exe else tether.library_path().parent / "tether"
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build --workspace` (or set TETHER_BIN)")
    if not (path.parent / "libtether_hub.so").is_file() and "TETHER_HUB_PLUGIN" not in os.environ:
        pytest.fail(f"{path.parent}/libtether_hub.so is missing: `cargo build --workspace --lib`")
    return path


class Hub:
    def __init__(self, d: Path, devices: List[Dict[str, object]], dps: Optional[Dict[str, object]] = None,
                 extra: Optional[List[str]] = None, websockets: bool = False):
        require("mosquitto", "mosquitto")
        require("openssl", "openssl")
        import json

        self.dir = d / "hub"
        (self.dir / "trusted").mkdir(parents=True)
        registry = d / "registry.json"
        content: Dict[str, object] = {"hostName": HUB_HOST, "certificateAuthorities": [], "devices": devices}
        if dps is not None:
            content["dps"] = dps
        registry.write_text(json.dumps(content))
        self.sas, self.x509 = free_port(), free_port()
        # --ws-port: MQTT over WebSockets, like IoT Hub's 443.
        self.ws = free_port() if websockets else None
        self.log_path = d / "hub.log"
        self.proc = subprocess.Popen(
            [str(tether_cli()), "hub", "--registry", str(registry), "--port", str(self.sas),
             "--x509-port", str(self.x509), "--dir", str(self.dir), *(extra or [])]
            + (["--ws-port", str(self.ws)] if self.ws else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), text=True,
        )
        line: List[str] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(60)
        if not line or not line[0].startswith(f"ready sas={self.sas} x509={self.x509} service=") or (
            self.ws and not line[0].rstrip().endswith(f" ws={self.ws}")
        ):
            self.stop()
            pytest.fail(f"tether hub did not get ready: {line}\n{self.log()}")
        self.ca = str(self.dir / "ca.pem")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()


class Tinyproxy:
    """A real HTTP CONNECT proxy allowing CONNECT to `ports` only, with Basic credentials
    when `basic` is given."""

    def __init__(self, d: Path, ports: List[int], basic: Optional[Tuple[str, str]] = None):
        require("tinyproxy", "tinyproxy")
        self.port = free_port()
        self.log_path = d / "tinyproxy.log"
        conf = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 60", "Allow 127.0.0.1", "LogLevel Info",
                f'LogFile "{self.log_path}"'] + [f"ConnectPort {p}" for p in ports]
        if basic:
            conf.append(f"BasicAuth {basic[0]} {basic[1]}")
        (d / "tinyproxy.conf").write_text("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(d / "tinyproxy.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.stop()
            pytest.fail("tinyproxy did not start")

    def url(self, basic: Optional[Tuple[str, str]] = None) -> str:
        auth = f"{basic[0]}:{basic[1]}@" if basic else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def connects(self) -> List[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line.split("): CONNECT ", 1)[1].split(" ")[0] for line in text.splitlines()
                if "): CONNECT " in line]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def sas_device(device_id: str, primary: str, secondary: str, status: str = "enabled") -> Dict[str, object]:
    return {
        "deviceId": device_id,
        "status": status,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}},
    }


def run_example(name: str, env: Dict[str, str], *args: str) -> subprocess.Popen:
    """Runs an example with the same `tether` package the tests import (installed or not)."""
    env = dict(env)
    package_root = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
