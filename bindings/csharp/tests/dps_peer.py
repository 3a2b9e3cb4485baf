"""The scripted DPS of the Python tests (bindings/python/tests/dps_responder.py) for the C#
tests: python3 dps_peer.py CERT KEY REPLIES_JSON, where REPLIES_JSON is a list of
[status, retry_after or null, body]. Prints "port N", then, once the device has
disconnected (or after 120 s), "seen " and what the device sent as JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests"))
from dps_responder import DpsResponder  # noqa: E402

cert, key, replies = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dps = DpsResponder(cert, key, [tuple(r) for r in replies])
print("port", dps.port, flush=True)
dps.done.wait(120)
print("seen", json.dumps(dps.seen), flush=True)
