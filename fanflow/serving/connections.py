"""Limits on connections, the guards a server needs against slow or hostile clients.

uvicorn's HTTP protocol (httptools) closes idle keep-alive connections, but it has no
deadline for a request's head or body, no bound on the head's size or header count, and
its concurrency limit answers in plain text. This subclass of its protocol adds them, all
answered in the protocol's error shape and followed by closing the connection:

| limit | default | when broken |
|---|---|---|
| ``header_timeout``: from a connection's opening, or a request's first byte, to the end of its head | 10 s | 408 |
| ``body_timeout``: from the end of the head to the end of the body | 60 s | 408 |
| ``idle_timeout``: a kept-alive connection waiting for its next request (uvicorn's ``timeout_keep_alive``) | 15 s | closed |
| ``max_connections`` open at once | 512 | 503 to the connection past the limit |
| ``max_url_bytes`` of the request target | 8 KiB | 414 |
| ``max_head_bytes`` of request line and headers together | 16 KiB | 431 |
| ``max_headers`` | 100 | 431 |

After such an answer the server stops sending and reads (and drops) what the client still
sends for up to ``LINGER_SECONDS`` before closing: closing a socket with unread data makes
the kernel reset the connection, and the client would lose the answer.

A request's scope carries ``HANG_UP`` (``"fanflow.hang_up"``): called with a function, the
protocol calls it once if the connection is lost before it is called again with None; it
returns False when the connection is already going. The app learns of a client that hangs up
without a task per request waiting for it.

uvicorn writes an answer's head and its body with two writes, which leave as two segments:
a client often wakes for the head alone and again for the body. Each request's answer is
written through ``AnswerWriter`` instead, which holds the head back until the body's first
write (or the event loop's next turn), so that a short answer leaves in one write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

LINGER_SECONDS = 1.0
HANG_UP = "fanflow.hang_up"  # in a request's scope: see the module's docstring


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 15.0
    max_connections: int = 512
    max_url_bytes: int = 8 * 1024
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")


class Refused(Exception):
    """A request refused before it reaches the app: the status and the error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class AnswerWriter:
    """The transport as a request's cycle sees it: its first write (the answer's head) is held
    until the next (the body, written with it in one system call) or until the event loop's
    next turn, so that an answer whose body comes later (a stream) is not held up."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self.loop = loop
        self.head: bytes | None = None
        self.written = False

    def write(self, data: bytes) -> None:
        if not self.written:
            self.written = True
            self.head = data
            self.loop.call_soon(self.flush)
        elif self.head is not None:
            head, self.head = self.head, None
            self.transport.writelines([head, data])
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits``: see the module's docstring."""

    limits = Limits()

    @classmethod
    def with_limits(cls, limits: Limits) -> type[GuardedProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    # -- connections --------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = None
        self._lingering = None
        self._head_bytes = 0
        self._in_head = True
        self._header_count = 0
        self._on_hang_up: Callable[[], None] | None = None
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                Refused(503, f"the server has {self.limits.max_connections} connections open; retry later")
            )
            return
        self._arm(self.limits.header_timeout, "the request's head")

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)
        self._hung_up()

    def _watch_hang_up(self, callback: Callable[[], None] | None) -> bool:
        if callback is not None and (self.transport.is_closing() or self._lingering is not None):
            return False
        self._on_hang_up = callback
        return True

    def _hung_up(self) -> None:
        callback, self._on_hang_up = self._on_hang_up, None
        if callback is not None:
            callback()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started:
            self.transport.close()  # an answer is under way: nothing more can be said
            return
        self._refuse(Refused(408, f"{what} did not arrive within {seconds:g} s"))

    def _refuse(self, refused: Refused) -> None:
        """Answer ``refused`` (unless an answer was started) and close the connection."""
        self._disarm()
        if self.transport.is_closing() or self._lingering is not None:
            return
        counter = self.app_state.get("refused")  # the app's metrics (endpoints.build_app)
        if counter is not None:
            counter.labels(str(refused.status)).inc()
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            body = json.dumps({"error": refused.message}).encode()
            head = [STATUS_LINE[refused.status]]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any, goes nowhere
            self.cycle.message_event.set()
            self._hung_up()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._lingering = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # -- reading ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # refused: what still comes is dropped
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._refuse(cause if isinstance(cause, Refused) else Refused(400, "malformed HTTP request"))
            return
        except httptools.HttpParserUpgrade:
            self._refuse(Refused(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as e:
            self._refuse(Refused(400, f"malformed HTTP request: {str(e)[:80]}"))
            return
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(Refused(431, f"the request's head is over {self.limits.max_head_bytes} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a request after a kept-alive one: its head has a deadline too
            self._in_head = True
            self._head_bytes = 0
            self._arm(self.limits.header_timeout, "the request's head")
        self._header_count = 0
        self._url_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise Refused(414, f"the request's target is over {self.limits.max_url_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise Refused(431, f"the request has more than {self.limits.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout, "the request's body")
        self.scope[HANG_UP] = self._watch_hang_up  # type: ignore[literal-required]
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request's cycle
            self.cycle.transport = AnswerWriter(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
