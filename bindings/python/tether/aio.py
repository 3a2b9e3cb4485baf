"""tether for asyncio: ``tether.aio.DeviceClient`` has the surface of the blocking
:class:`tether.DeviceClient`, with coroutines where that one waits, and never blocks the
event loop.

    from tether.aio import DeviceClient

    async with DeviceClient.from_environment() as client:
        await client.connect()
        mid = await client.send(b'{"t":21}', content_type="application/json")
        await client.wait_acked(mid)

How: the native client is used from one worker thread that belongs to this client (the
native client is not thread-safe, so every call goes through it, in order). Waiting methods
(``wait_acked``, ``receive_*``, ``get_twin``, ``patch_reported``) poll in short slices
(``poll_slice``, 50 ms), so other calls on the same client interleave with a long wait.
``connect()`` is one native call: other calls wait for it to return. Handlers run on the
event loop; a handler may be a coroutine function; set them from code running on the loop.
A closed client raises :class:`tether.ClosedError`. A :class:`tether.MethodRequest` from this
client answers with ``await request.respond(status, payload)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import time
from typing import Any, Callable, Dict, Iterable, Optional, Set, TypeVar, Union

from . import _native as n
from . import client as blocking
from .client import DesiredPatch, Message, MethodRequest, Payload, TwinResponse

_T = TypeVar("_T")
_A = TypeVar("_A", bound="DeviceClient")

Handler = Callable[[Any], Any]


class DeviceClient:
    """An IoT Hub device (or module) client for asyncio; see the module documentation.

    Build it with ``from_connection_string``, ``from_x509``, ``from_environment`` (no I/O
    beyond reading the given files) or ``await DeviceClient.from_dps(...)``."""

    poll_slice = 0.05

    def __init__(self, inner: blocking.DeviceClient):
        self._inner = inner
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-aio")
        self._handlers: Dict[str, Optional[Handler]] = {}

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_connection_string(cls: type[_A], connection_string: str, *args: Any, **kwargs: Any) -> _A:
        """As :meth:`tether.DeviceClient.from_connection_string`."""
        return cls(blocking.DeviceClient.from_connection_string(connection_string, *args, **kwargs))

    @classmethod
    def from_x509(cls: type[_A], *args: Any, **kwargs: Any) -> _A:
        """As :meth:`tether.DeviceClient.from_x509`."""
        return cls(blocking.DeviceClient.from_x509(*args, **kwargs))

    @classmethod
    def from_environment(cls: type[_A]) -> _A:
        """As :meth:`tether.DeviceClient.from_environment`."""
        return cls(blocking.DeviceClient.from_environment())

    @classmethod
    async def from_dps(cls: type[_A], *args: Any, **kwargs: Any) -> _A:
        """As :meth:`tether.DeviceClient.from_dps`; provisioning runs on a worker thread."""
        loop = asyncio.get_running_loop()
        inner = await loop.run_in_executor(None, functools.partial(blocking.DeviceClient.from_dps, *args, **kwargs))
        return cls(inner)

    @classmethod
    def from_credentials(cls: type[_A], *args: Any, **kwargs: Any) -> _A:
        """As :meth:`tether.DeviceClient.from_credentials` (certificate renewal included)."""
        return cls(blocking.DeviceClient.from_credentials(*args, **kwargs))

    async def renew_certificate(self) -> None:
        """As :meth:`tether.DeviceClient.renew_certificate`; progress comes from ``poll``."""
        await self._run(self._inner.renew_certificate)

    # -- the worker -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Runs ``fn(*args)`` on this client's worker thread."""
        if self._inner.closed:
            raise n.ClosedError(type(self).__name__)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def _wait(self, ready: Callable[[], Optional[_T]], timeout: float, what: str) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            step: Callable[[], Optional[_T]] = functools.partial(
                self._inner._wait_step, ready, deadline, timeout, what, self.poll_slice
            )
            got = await self._run(step)
            if got is not None:
                return self._adopt(got)

    def _adopt(self, event: _T) -> _T:
        """Method requests from this client answer through it (``await req.respond()``)."""
        if isinstance(event, MethodRequest):
            event._client = self
        return event

    # -- connection -----------------------------------------------------------------

    async def connect(self, timeout: float = 30.0) -> None:
        """As :meth:`tether.DeviceClient.connect`."""
        await self._run(self._inner.connect, timeout)

    async def disconnect(self) -> None:
        await self._run(self._inner.disconnect)

    async def inflight(self) -> int:
        """QoS 1 messages not yet acknowledged (a coroutine here: it asks the worker)."""
        return await self._run(lambda: self._inner.inflight)

    @property
    def tls(self) -> Optional[str]:
        """The negotiated protocol and suite once connected."""
        return self._inner.tls

    async def set_keys(self, primary_key: str, secondary_key: Optional[str] = None) -> None:
        await self._run(self._inner.set_keys, primary_key, secondary_key)

    async def close(self) -> None:
        """Disconnects gracefully and frees the native client; idempotent."""
        if not self._inner.closed:
            await self._run(self._inner.close)
        self._executor.shutdown(wait=False)

    @property
    def closed(self) -> bool:
        return self._inner.closed

    async def __aenter__(self: _A) -> _A:
        self._inner._ptr()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- telemetry ------------------------------------------------------------------

    async def send(
        self,
        payload: Payload,
        properties: Optional[Dict[str, Optional[str]]] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        qos: int = 1,
    ) -> int:
        """As :meth:`tether.DeviceClient.send`."""
        return await self._run(self._inner.send, payload, properties, content_type, content_encoding, qos)

    send_message = send

    async def wait_acked(self, ids: Union[int, Iterable[int]], timeout: float = 30.0) -> None:
        """As :meth:`tether.DeviceClient.wait_acked`."""
        wanted: Set[int] = await self._run(self._inner._unacked, ids)
        await self._wait(lambda: None if wanted & self._inner._pending else True, timeout,
                         f"acknowledgement of {len(wanted)} message(s)")

    # -- the pump -------------------------------------------------------------------

    async def poll(self, timeout: float = 1.0) -> Optional[object]:
        """As :meth:`tether.DeviceClient.poll` (returns at the first event)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            event = await self._run(self._inner._poll, max(0.0, min(remaining, self.poll_slice)))
            if event is not None or remaining <= self.poll_slice:
                return self._adopt(event)

    # -- receiving ------------------------------------------------------------------

    async def subscribe(self, c2d: bool = False, methods: bool = False, twin: bool = False) -> None:
        await self._run(self._inner.subscribe, c2d, methods, twin)

    def _set_handler(self, attr: str, handler: Optional[Handler]) -> None:
        self._handlers[attr] = handler
        wrapped = None if handler is None else functools.partial(self._dispatch, asyncio.get_running_loop(), handler)
        # Subscribing is a native call: it runs on the worker, in order with every other call
        # (a failure is logged: a property setter cannot await it).
        self._executor.submit(setattr, self._inner, attr, wrapped).add_done_callback(_log_failure)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, handler: Handler, event: Any) -> None:
        """Called on the worker during a poll: hands the event to the loop."""
        loop.call_soon_threadsafe(self._call_handler, handler, self._adopt(event))

    @staticmethod
    def _call_handler(handler: Handler, event: Any) -> None:
        result = handler(event)
        if inspect.isawaitable(result):
            asyncio.ensure_future(result)

    @property
    def on_message_received(self) -> Optional[Handler]:
        return self._handlers.get("on_message_received")

    @on_message_received.setter
    def on_message_received(self, handler: Optional[Handler]) -> None:
        self._set_handler("on_message_received", handler)

    @property
    def on_method_request_received(self) -> Optional[Handler]:
        return self._handlers.get("on_method_request_received")

    @on_method_request_received.setter
    def on_method_request_received(self, handler: Optional[Handler]) -> None:
        self._set_handler("on_method_request_received", handler)

    @property
    def on_twin_desired_properties_patch_received(self) -> Optional[Handler]:
        return self._handlers.get("on_twin_desired_properties_patch_received")

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(self, handler: Optional[Handler]) -> None:
        self._set_handler("on_twin_desired_properties_patch_received", handler)

    async def receive_message(self, timeout: float = 30.0) -> Message:
        inner = self._inner
        await self._run(inner._want, n.SUBSCRIBE_C2D)
        return await self._wait(lambda: inner._messages.popleft() if inner._messages else None, timeout, "message")

    async def receive_method_request(self, timeout: float = 30.0) -> MethodRequest:
        inner = self._inner
        await self._run(inner._want, n.SUBSCRIBE_METHODS)
        return await self._wait(lambda: inner._methods.popleft() if inner._methods else None, timeout,
                                "method request")

    async def receive_desired_patch(self, timeout: float = 30.0) -> DesiredPatch:
        inner = self._inner
        await self._run(inner._want, n.SUBSCRIBE_TWIN)
        return await self._wait(lambda: inner._patches.popleft() if inner._patches else None, timeout,
                                "desired patch")

    async def respond_method(self, request: Union[MethodRequest, str], status: int = 200, payload: Any = None) -> None:
        await self._run(self._inner.respond_method, request, status, payload)

    # -- twin -----------------------------------------------------------------------

    async def _twin_request(self, sender: Callable[[Any, int, Any], int], timeout: float) -> TwinResponse:
        inner = self._inner
        request_id = await self._run(inner._twin_send, sender)
        resp = await self._wait(lambda: inner._twin.pop(request_id, None), timeout, "twin response")
        return inner._twin_result(resp)

    async def get_twin(self, timeout: float = 30.0) -> Dict[str, Any]:
        """As :meth:`tether.DeviceClient.get_twin`."""
        sender = await self._run(self._inner._twin_get_sender)
        return blocking._twin_document(await self._twin_request(sender, timeout))

    async def patch_reported(self, patch: Dict[str, Any], timeout: float = 30.0) -> int:
        """As :meth:`tether.DeviceClient.patch_reported`."""
        sender = await self._run(self._inner._twin_patch_sender, patch)
        return (await self._twin_request(sender, timeout)).version

    patch_twin_reported_properties = patch_reported

    def __repr__(self) -> str:
        state = "closed" if self.closed else (self.tls or "not connected")
        return f"<tether.aio.DeviceClient {state}>"


def _log_failure(future: "concurrent.futures.Future[None]") -> None:
    error = future.exception()
    if error is not None:
        blocking.n_logger().error("setting a handler failed: %s", error)


__all__ = ["DeviceClient"]
