"""A scripted Device Provisioning Service for tests: a TLS 1.2 server on 127.0.0.1 that
speaks just enough MQTT 3.1.1 (CONNACK, SUBACK, PUBACK) and answers each registration
request with the next scripted reply."""

import json
import socket
import ssl
import struct
import threading
from typing import Dict, List, Optional, Tuple


class DpsResponder:
    def __init__(self, cert: str, key: str, replies: List[Tuple[int, Optional[int], Dict]]):
        self.replies = list(replies)
        self.seen: Dict[str, object] = {"topics": []}
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _read_packet(self, conn) -> Tuple[int, bytes]:
        header = self._read(conn, 1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(conn, 1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        return header, self._read(conn, length)

    @staticmethod
    def _read(conn, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    @staticmethod
    def _string(body: bytes, at: int) -> Tuple[str, int]:
        (n,) = struct.unpack_from(">H", body, at)
        return body[at + 2:at + 2 + n].decode(), at + 2 + n

    def _serve(self) -> None:
        raw, _ = self.sock.accept()
        conn = self.ctx.wrap_socket(raw, server_side=True)
        try:
            while True:
                header, body = self._read_packet(conn)
                kind = header >> 4
                if kind == 1:  # CONNECT: protocol name, level, flags, keep-alive, then payload
                    _, at = self._string(body, 0)
                    flags = body[at + 1]
                    at += 4
                    self.seen["client_id"], at = self._string(body, at)
                    if flags & 0x80:
                        self.seen["username"], at = self._string(body, at)
                    if flags & 0x40:
                        self.seen["password"], at = self._string(body, at)
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE
                    conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 3:  # PUBLISH (QoS 1 from the device)
                    topic, at = self._string(body, 0)
                    pkid = body[at:at + 2]
                    self.seen["topics"].append(topic)
                    conn.sendall(b"\x40\x02" + pkid)
                    rid = topic.split("$rid=")[1].split("&")[0]
                    status, retry, reply = self.replies.pop(0)
                    res = f"$dps/registrations/res/{status}/?$rid={rid}"
                    if retry is not None:
                        res += f"&retry-after={retry}"
                    payload = json.dumps(reply).encode()
                    variable = struct.pack(">H", len(res)) + res.encode() + payload
                    conn.sendall(bytes([0x30]) + self._length(len(variable)) + variable)
                elif kind == 14:  # DISCONNECT
                    break
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            self.sock.close()
            self.done.set()

    @staticmethod
    def _length(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n % 128, n // 128
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out
