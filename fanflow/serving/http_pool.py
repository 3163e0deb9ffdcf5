"""Keep-alive HTTP/1.1 connections to one server: the gateway's calls to a member.

The gateway asks each member once or twice per request, so the cost of a call sits on every
answer's path. A general client (aiohttp) spends about 230 µs of CPU per call here, on URL
parsing, header objects, cookies, tracing and timers the gateway never uses; this pool keeps
only what a call to a fanflow server needs (about 60 µs): connections reused while they are
open and fresh, at most ``limit`` of them (more calls wait for one), bodies written as given
(in ``STREAM_BYTES`` slices under the transport's flow control), answers read by httptools'
parser (the C parser uvicorn uses). A call that is cancelled (its deadline passed, its client
hung up) closes its connection: the server then drops the work it had not started.

``send`` starts a call at once: on a free kept-alive connection its request is written
before ``send`` returns (no task, no turn of the event loop), so that a gateway asking two
members writes both requests in one go.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

STREAM_BYTES = 1024 * 1024  # bodies larger than this are written in slices, never joined


class ConnectFailed(ConnectionError):
    """No connection could be opened to the server."""


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reply: asyncio.Future[Reply] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reason = b""
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"the server sent malformed HTTP: {e}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"the server closed the connection{f': {exc}' if exc else ''}"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools callbacks --------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        reply = Reply(
            self._parser.get_status_code(),
            self._reason.decode("latin-1"),
            self._headers,
            b"".join(self._chunks),
        )
        if not self._parser.should_keep_alive():
            self.close()
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(reply)
        else:  # an answer nobody asked for: the connection cannot be trusted
            self.close()

    # -- use -----------------------------------------------------------------------------------
    def _fail(self, error: Exception) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def start(self, head: bytes, parts: list) -> asyncio.Future[Reply]:
        """Write a request of at most ``STREAM_BYTES`` now; its reply's future."""
        assert self.transport is not None
        reply = self._expect()
        self.transport.writelines([head, *parts])
        return reply

    async def exchange(self, head: bytes, parts: list) -> Reply:
        """Send a request of any size (larger bodies in slices, as the server reads them)."""
        assert self.transport is not None
        if sum(len(part) for part in parts) <= STREAM_BYTES:
            return await self.start(head, parts)
        reply = self._expect()
        self.transport.write(head)
        for part in parts:
            view = memoryview(part).cast("B")
            for start in range(0, len(view), STREAM_BYTES):
                if reply.done() or self.transport.is_closing():
                    break  # answered early (a refusal) or gone: stop sending
                self.transport.write(view[start : start + STREAM_BYTES])
                if self._writable is not None:
                    await self._writable
        return await reply

    def _expect(self) -> asyncio.Future[Reply]:
        self._reply = asyncio.get_running_loop().create_future()
        self._reason, self._headers, self._chunks = b"", {}, []
        return self._reply


class HTTPPool:
    """Calls to the server at ``url`` (``http://host:port[/prefix]``, or https) over at most
    ``limit`` kept-alive connections, each let go after ``keepalive`` idle seconds."""

    def __init__(self, url: str, limit: int = 8, keepalive: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.keepalive = keepalive
        self.limit = limit
        self._lent = 0  # connections in use (or being opened) by calls
        self._waiting: deque[asyncio.Future[None]] = deque()  # calls waiting for a connection
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def request(
        self, method: str, path: str, parts: list | None = None, headers: dict | None = None
    ) -> Reply:
        """``method`` on ``prefix + path``; raises ConnectFailed when no connection opens, and
        ConnectionError when the connection fails before the whole answer came."""
        return await self.send(method, path, parts, headers)

    def send(
        self, method: str, path: str, parts: list | None = None, headers: dict | None = None
    ) -> asyncio.Future[Reply]:
        """``request``, started now: its reply's future. Cancelling the future closes the
        connection."""
        parts = parts or []
        size = sum(len(part) for part in parts)
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"content-length: {size}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._lent < self.limit and not self._waiting and size <= STREAM_BYTES:
            connection = self._take_idle()
            if connection is not None:
                self._lent += 1
                reply = connection.start(head, parts)
                reply.add_done_callback(lambda done: self._put_back(connection, done))
                return reply
        return asyncio.ensure_future(self._call(head, parts))

    async def _call(self, head: bytes, parts: list) -> Reply:
        """A call that waits for a connection (or opens one), or streams a large body."""
        await self._lend()
        connection: _Connection | None = None
        try:
            connection = self._take_idle() or await self._connect()
            reply = await connection.exchange(head, parts)
        except BaseException:  # cancelled, or failed: the connection's state is unknown
            if connection is not None:
                connection.close()
                self._open.discard(connection)
            self._give_back()
            raise
        self._put_back(connection, None)
        return reply

    def _put_back(self, connection: _Connection, reply: asyncio.Future[Reply] | None) -> None:
        failed = reply is not None and (reply.cancelled() or reply.exception() is not None)
        if failed or connection.closed:
            connection.close()
            self._open.discard(connection)
        else:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        self._give_back()

    async def _lend(self) -> None:
        """Wait for one of the ``limit`` connections (first come, first served)."""
        if self._lent < self.limit and not self._waiting:
            self._lent += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # handed a connection's place by _give_back
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # handed one just as it was cancelled: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def _give_back(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place goes to it, not back to the pool
                return
        self._lent -= 1

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest still open
            if not connection.closed and now - connection.idle_since < self.keepalive:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {e}") from None
        self._open.add(connection)
        return connection

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
