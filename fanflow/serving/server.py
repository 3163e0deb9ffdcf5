"""Running an ASGI app on uvicorn: bound to a known socket, so that port 0 ("pick a free one")
can be reported, either blocking until SIGTERM (a service step, a command) or in a thread
(tests, embedding)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable

import uvicorn

from fanflow.serving.connections import GuardedProtocol, Limits

DEFAULT_HOST = "127.0.0.1"


def bind_socket(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0: a free port the kernel picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # that say they are TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restarted server takes its old port back even while old connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot bind {host}:{port}: {e.strerror}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _server(app, limits: Limits | None = None, graceful_timeout: int | None = None) -> uvicorn.Server:
    limits = limits or Limits()
    config = uvicorn.Config(
        app,
        http=GuardedProtocol.with_limits(limits),
        ws="none",
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=limits.idle_timeout,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_timeout,  # streams (a page's live updates) end then
    )
    return uvicorn.Server(config)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The command-line options of ``connections.Limits``."""
    defaults = Limits()
    group = parser.add_argument_group("connection limits")
    for name in ("header_timeout", "body_timeout", "idle_timeout"):
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=float, default=getattr(defaults, name), help="seconds (default %(default)s)")
    group.add_argument("--max-connections", type=int, default=defaults.max_connections)


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
    )


async def _serve_until_ready(
    server: uvicorn.Server,
    sock: socket.socket,
    ready: Callable[[], Awaitable[None]] | None,
    on_ready: Callable[[str], None],
) -> None:
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            waiting = asyncio.ensure_future(ready() if ready is not None else asyncio.sleep(0))
            await asyncio.wait({waiting, serving}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # stopped (SIGTERM) before it was ready: nothing to announce
                waiting.cancel()
            else:
                waiting.result()  # raises when it cannot become ready
                if not serving.done():
                    on_ready(url_of(sock))
    except BaseException:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await serving
        raise
    await serving
    if not server.started:
        raise RuntimeError("the server did not start (see the log above)")


def serve_blocking(
    app,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[str], None] = lambda url: None,
    limits: Limits | None = None,
    graceful_timeout: int | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down cleanly and return.

    Once the server listens and ``ready()`` (if given) has returned, ``on_ready(url)`` is
    called; an exception from ``ready()`` stops the server and is raised here.
    """
    sock = bind_socket(host, port)
    server = _server(app, limits, graceful_timeout)
    # uvicorn catches SIGTERM/SIGINT while serving and raises them again once it has shut
    # down; these handlers absorb that second delivery so that this function returns.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(_serve_until_ready(server, sock, ready, on_ready))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


class ServerThread:
    """An app served on a loopback socket from a background thread::

    with ServerThread(app) as server:
        httpx.get(server.url + "/v2/health/live")
    """

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = 0, limits: Limits | None = None,
                 graceful_timeout: int | None = None):
        self.app = app
        self.sock = bind_socket(host, port)
        self.url = url_of(self.sock)
        self.port = self.sock.getsockname()[1]
        self._server = _server(app, limits, graceful_timeout)
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self.sock]))
        except BaseException as e:  # SystemExit from a failed lifespan start included
            self._error = e

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.url} did not start: {self._error!r}")
            time.sleep(0.005)
        return self

    def request_stop(self) -> None:
        """Ask the server to shut down, without waiting (to stop several at once)."""
        self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
