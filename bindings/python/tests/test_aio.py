"""tether.aio end to end: the asyncio client against the local IoT Hub stand-in and mosquitto
configured like IoT Hub, with a ticker task that proves the event loop keeps running while
the client waits (the blocking client would stall it for the whole wait)."""

import asyncio
import json
import socket
import time
from typing import List

import pytest

import tether
import tether.aio
from conftest import DEVICE, HUB_HOST, KEY, Hub, free_port, sas_device
from test_client import TwinService

MAX_GAP = 0.5  # seconds the loop may go without running the ticker (generous: loaded machine)


class Ticker:
    """A task that wakes every 10 ms and records when; ``gap()`` is the longest stall."""

    def __init__(self) -> None:
        self.times: List[float] = [time.monotonic()]
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.times.append(time.monotonic())

    async def stop(self) -> float:
        self.times.append(time.monotonic())
        self.task.cancel()
        return max(b - a for a, b in zip(self.times, self.times[1:]))


def test_aio_sends_telemetry_to_the_local_hub(tmp_path):
    hub = Hub(tmp_path, [sas_device("py-aio", KEY, KEY)])

    async def main() -> float:
        ticker = Ticker()
        cs = f"HostName={HUB_HOST};DeviceId=py-aio;SharedAccessKey={KEY}"
        async with tether.aio.DeviceClient.from_connection_string(cs, ca_file=hub.ca, port=hub.sas) as client:
            await client.connect(timeout=30)
            ids = [await client.send(b'{"n":%d}' % i, properties={"k": "v"}, content_type="application/json")
                   for i in range(5)]
            await client.wait_acked(ids, timeout=20)
            assert await client.inflight() == 0
            assert client.tls and client.tls.startswith("TLSv1.2"), client.tls  # the Connected event was polled
        assert client.closed
        with pytest.raises(tether.ClosedError):
            await client.send(b"after close")
        return await ticker.stop()

    try:
        gap = asyncio.run(main())
    finally:
        hub.stop()
    assert 'accepted "py-aio"' in hub.log(), hub.log()
    assert gap < MAX_GAP, f"the event loop stalled for {gap:.2f} s"


def test_aio_loop_keeps_running_while_connect_waits():
    # A peer that accepts TCP (the kernel's backlog) and never answers the TLS handshake.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    cs = f"HostName=localhost;DeviceId={DEVICE};SharedAccessKey={KEY}"

    async def main() -> float:
        ticker = Ticker()
        async with tether.aio.DeviceClient.from_connection_string(cs, port=port, connect_timeout=1) as client:
            start = time.monotonic()
            with pytest.raises(tether.TetherError):
                await client.connect(timeout=2)
            assert time.monotonic() - start >= 1.5  # it did wait
        return await ticker.stop()

    try:
        gap = asyncio.run(main())
    finally:
        silent.close()
    assert gap < MAX_GAP, f"the event loop stalled for {gap:.2f} s during connect"


def test_aio_loop_keeps_running_while_send_waits_for_its_acknowledgement():
    cs = f"HostName=localhost;DeviceId={DEVICE};SharedAccessKey={KEY}"
    port = free_port()  # nothing listens: the message stays queued

    async def main() -> float:
        ticker = Ticker()
        async with tether.aio.DeviceClient.from_connection_string(cs, port=port, connect_timeout=1) as client:
            mid = await client.send(b"queued")
            start = time.monotonic()
            with pytest.raises(tether.TetherTimeout):
                await client.wait_acked(mid, timeout=2)
            assert time.monotonic() - start >= 1.9
            assert await client.inflight() == 1
        return await ticker.stop()

    gap = asyncio.run(main())
    assert gap < MAX_GAP, f"the event loop stalled for {gap:.2f} s during wait_acked"


def test_aio_methods_messages_and_twin(broker):
    service = TwinService(broker)
    sub = broker.subscribe("$iothub/methods/res/#")

    async def main() -> None:
        async with tether.aio.DeviceClient.from_connection_string(
            broker.connection_string, ca_file=broker.ca, port=broker.port
        ) as client:
            answered = asyncio.Event()

            async def on_method(req: tether.MethodRequest) -> None:  # a coroutine handler, on the loop
                await req.respond(200, {"echo": req.json()})
                answered.set()

            client.on_method_request_received = on_method
            await client.subscribe(c2d=True)
            await client.connect(timeout=20)
            await client.wait_acked(await client.send(b"sync"), timeout=10)

            await asyncio.to_thread(broker.publish, "$iothub/methods/POST/reboot/?$rid=9", '{"delay":2}')
            while not answered.is_set():
                await client.poll(0.2)
            for _ in range(5):
                await client.poll(0.05)  # let the response go out

            await asyncio.to_thread(broker.publish, f"devices/{DEVICE}/messages/devicebound/%24.mid=m-9&a=b", "hi")
            msg = await client.receive_message(timeout=10)
            assert (msg.data, msg.properties) == (b"hi", {"$.mid": "m-9", "a": "b"})

            twin = await client.get_twin(timeout=10)
            assert twin["desired"] == {"interval": 10, "$version": 3}
            assert await client.patch_reported({"fw": "2.0"}, timeout=10) == 8
            assert service.reported == {"fw": "2.0"}

    try:
        asyncio.run(main())
        got = sub.wait(1)
    finally:
        sub.close()
        service.close()
    assert got[0][0] == "$iothub/methods/res/200/?$rid=9"
    assert json.loads(got[0][1]) == {"echo": {"delay": 2}}
