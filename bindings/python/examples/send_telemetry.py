"""send_telemetry: sends COUNT JSON messages with properties at QoS 1 and waits until the
hub acknowledged them all.

    TETHER_CONNECTION_STRING=... [TETHER_CA_FILE=...] [TETHER_PORT=...] python send_telemetry.py [COUNT]

Prints `sent N acked N`. X.509: set TETHER_CERT_FILE and TETHER_KEY_FILE and `x509=true`
in the connection string.
"""

import json
import logging
import sys

from tether import DeviceClient, TetherError


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # 1. Create and configure from the environment.
    with DeviceClient.from_environment() as client:
        # 2. Connect.
        client.connect(timeout=30)

        # 3. Send, then wait for the acknowledgements.
        ids = []
        for i in range(count):
            body = json.dumps({"temperature": 21.5 + i, "seq": i})
            ids.append(client.send(body, properties={"seq": str(i)},
                                   content_type="application/json", content_encoding="utf-8"))
        client.wait_acked(ids, timeout=30)
        print(f"sent {len(ids)} acked {len(ids)}", flush=True)
    # 4. Leaving the block disconnects gracefully.
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TetherError as e:
        print(f"send_telemetry: {e}", file=sys.stderr)
        sys.exit(1)
