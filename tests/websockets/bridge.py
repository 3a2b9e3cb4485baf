"""MQTT over WebSockets in front of a plain MQTT broker, built on the `websockets` package.

The WebSocket side (upgrade, subprotocol negotiation, framing, masking checks, ping/pong,
close) is entirely the `websockets` package's: the test peer for tether's WebSocket client
that tether did not write. TLS is Python's ssl module, capped at TLS 1.2 with IoT Hub's
suites. Usage: bridge.py PORT BACKEND_PORT CERT KEY. Prints `ready` when it listens and one
line per connection (`connection path=... subprotocol=...`) on standard error.
"""

import asyncio
import ssl
import sys

import websockets
from websockets.asyncio.server import serve

HUB_SUITES = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"


async def main():
    port, backend, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(HUB_SUITES)
    ctx.load_cert_chain(cert, key)

    def only_the_hub_path(connection, request):
        if request.path.split("?")[0] != "/$iothub/websocket":
            return connection.respond(404, "not an IoT Hub path\n")
        return None

    async def relay(ws):
        print(f"connection path={ws.request.path} subprotocol={ws.subprotocol}",
              file=sys.stderr, flush=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", backend)

        async def up():
            try:
                async for message in ws:
                    if isinstance(message, str):
                        await ws.close(1003, "binary frames only")
                        break
                    writer.write(message)
                    await writer.drain()
            finally:
                writer.close()

        async def down():
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    await ws.send(data)
            finally:
                await ws.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    async with serve(relay, "127.0.0.1", port, ssl=ctx, subprotocols=["mqtt"],
                     process_request=only_the_hub_path, max_size=1 << 20):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
