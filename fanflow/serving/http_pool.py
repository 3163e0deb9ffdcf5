"""Keep-alive HTTP/1.1 connections to one server: the gateway's calls to a member.

The gateway asks each member once or twice per request, so the cost of a call sits on every
answer's path. A general client (aiohttp) spends about 230 µs of CPU per call here, on URL
parsing, header objects, cookies, tracing and timers the gateway never uses; this pool keeps
only what a call to a fanflow server needs (about 60 µs): connections reused while they are
open and fresh, at most ``limit`` of them (more calls wait for one), bodies written as given
(in ``STREAM_BYTES`` slices under the transport's flow control), answers read by httptools'
parser (the C parser uvicorn uses). A call that is cancelled (its deadline passed, its client
hung up) closes its connection: the server then drops the work it had not started.
"""

from __future__ import annotations

import asyncio
import ssl
import time
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

    async def exchange(self, head: bytes, parts: list) -> Reply:
        assert self.transport is not None
        self._reply = asyncio.get_running_loop().create_future()
        self._reason, self._headers, self._chunks = b"", {}, []
        size = sum(len(part) for part in parts)
        if size <= STREAM_BYTES:
            self.transport.writelines([head, *parts])
        else:
            self.transport.write(head)
            for part in parts:
                view = memoryview(part).cast("B")
                for start in range(0, len(view), STREAM_BYTES):
                    if self._reply.done() or self.transport.is_closing():
                        break  # answered early (a refusal) or gone: stop sending
                    self.transport.write(view[start : start + STREAM_BYTES])
                    if self._writable is not None:
                        await self._writable
        return await self._reply


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
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def request(
        self, method: str, path: str, parts: list | None = None, headers: dict | None = None
    ) -> Reply:
        """``method`` on ``prefix + path``; raises ConnectFailed when no connection opens, and
        ConnectionError when the connection fails before the whole answer came."""
        parts = parts or []
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"content-length: {sum(len(part) for part in parts)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                reply = await connection.exchange(head, parts)
            except BaseException:  # cancelled, or failed: the connection's state is unknown
                connection.close()
                self._open.discard(connection)
                raise
            if connection.closed:
                self._open.discard(connection)
            else:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            return reply

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
