"""c2d_methods_twin: reads the twin, reports a property, prints cloud-to-device messages
and desired-property patches, and answers direct methods.

    TETHER_CONNECTION_STRING=... python c2d_methods_twin.py [EVENTS]

Stops after EVENTS messages, method calls and patches (default: runs until interrupted).
"""

import sys

from tether import DeviceClient, Message, MethodRequest, TetherError

seen = 0


def on_message(msg: Message) -> None:
    global seen
    props = " ".join(f"{k}={'(null)' if v is None else v}" for k, v in msg.properties.items())
    print(f"c2d {msg.data.decode()} {props}".rstrip(), flush=True)
    seen += 1


def on_method(req: MethodRequest) -> None:
    global seen
    print(f"method {req.name} {req.payload.decode()}", flush=True)
    req.respond(200, {"done": True})
    seen += 1


def on_patch(patch: dict) -> None:
    global seen
    print(f"desired {patch}", flush=True)
    seen += 1


def main() -> int:
    wanted = int(sys.argv[1]) if len(sys.argv) > 1 else -1

    # 1. Create, and say what we want to receive.
    with DeviceClient.from_environment() as client:
        client.on_message_received = on_message
        client.on_method_request_received = on_method
        client.on_twin_desired_properties_patch_received = on_patch

        # 2. Connect.
        client.connect(timeout=30)

        # 3. Twin: read it, report a property.
        print(f"twin {client.get_twin(timeout=30)}", flush=True)
        print(f"reported version {client.patch_reported({'firmware': '1.2.3'}, timeout=30)}", flush=True)
        print("ready", flush=True)

        # 4. Run: handlers are called from poll().
        while wanted < 0 or seen < wanted:
            client.poll(1.0)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TetherError as e:
        print(f"c2d_methods_twin: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(0)
