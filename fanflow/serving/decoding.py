"""Reading inference requests without holding up the event loop, in bounded memory.

Parsing JSON holds Python's GIL for the whole parse (simdjson and the standard library alike),
so a large JSON body parsed in a thread would still stop the event loop, and health checks
with it. Hence three paths, by size:

- a body of at most ``inline_bytes`` is read where it arrives (a few milliseconds at most);
- a larger body whose JSON part is small (binary tensor data) is read in a thread: its arrays
  are views of the body, nothing is copied;
- a larger JSON part is parsed in a worker process (``workers`` of them; spawned, so that no
  thread of the server is forked, when the first such body comes), which reads the body from
  shared memory (a pickled body would be copied twice on each side of the pipe) and sends
  back the arrays. A server that runs in a
  daemonic process (which may not have children) parses it in a thread instead, and says so
  in its log.

At most ``max_large`` requests larger than ``inline_bytes`` are read and handled at once, and
of those at most ``max_large_json`` with a JSON body (one that does not say it holds binary
tensor data): decoding JSON takes several times the body's size (the worker's copy, the
parser's tape, the arrays sent back), binary data next to none. The others wait before their
bodies are read (the client's bytes stay in the socket buffers), so the memory they take is
bounded by ``max_large`` × (body + its arrays).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory

from fanflow.serving.protocol import InferRequest, ProtocolError, parse_request

log = logging.getLogger(__name__)

DEFAULT_INLINE_BYTES = 256 * 1024
DEFAULT_WORKERS = 1
DEFAULT_MAX_LARGE = 2
DEFAULT_MAX_LARGE_JSON = 1


class Decoder:
    def __init__(
        self,
        inline_bytes: int = DEFAULT_INLINE_BYTES,
        workers: int = DEFAULT_WORKERS,
        max_large: int = DEFAULT_MAX_LARGE,
        max_large_json: int = DEFAULT_MAX_LARGE_JSON,
    ):
        if inline_bytes < 0 or workers < 1 or max_large < 1 or max_large_json < 1:
            raise ValueError("inline_bytes must be ≥ 0, workers, max_large and max_large_json ≥ 1")
        self.inline_bytes = inline_bytes
        self.workers = workers
        self.max_large = max_large
        self.max_large_json = min(max_large_json, max_large)
        self._large: asyncio.Semaphore | None = None
        self._large_json: asyncio.Semaphore | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._daemonic = False

    async def start(self) -> None:
        self._large = asyncio.Semaphore(self.max_large)
        self._large_json = asyncio.Semaphore(self.max_large_json)
        self._daemonic = multiprocessing.current_process().daemon
        if self._daemonic:
            log.warning(
                "a daemonic process cannot start decoding workers: large JSON bodies are parsed in a thread"
            )

    async def stop(self) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
        return pool

    @contextlib.asynccontextmanager
    async def admit(self, content_length: str | None, binary: bool = False):
        """Hold a place for a request while it is read and handled: requests of more than
        ``inline_bytes`` (or of unknown length) take one of ``max_large`` places, and unless
        they say they hold ``binary`` tensor data, one of ``max_large_json`` too."""
        assert self._large is not None and self._large_json is not None, "the decoder has not started"
        small = (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) <= self.inline_bytes
        )
        if small:
            yield
            return
        async with self._large:
            if binary:
                yield
                return
            async with self._large_json:
                yield

    async def decode(self, body: bytes, json_length: int | None) -> InferRequest:
        """``protocol.parse_request(body, json_length)``, on the path its size calls for."""
        json_size = len(body) if json_length is None else json_length
        if len(body) <= self.inline_bytes:
            return parse_request(body, json_length)
        if json_size <= self.inline_bytes or self._daemonic:
            return await asyncio.to_thread(parse_request, body, json_length)
        if self._pool is None:
            self._pool = self._new_pool()
        shared = shared_memory.SharedMemory(create=True, size=len(body))
        try:
            shared.buf[: len(body)] = body
            try:
                future = self._pool.submit(parse_shared, shared.name, len(body), json_length)
            except BrokenProcessPool:  # a worker died (killed for memory?): start new ones
                self._pool = self._new_pool()
                future = self._pool.submit(parse_shared, shared.name, len(body), json_length)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            log.error("a request-decoding worker process died; starting a new one")
            self._pool = self._new_pool()
            raise ProtocolError(
                "the server could not decode the request (its decoder restarted); retry", 503
            ) from None
        finally:
            # A worker still reading it (this request was cancelled) keeps its mapping: the
            # memory goes when both have let go.
            shared.close()
            shared.unlink()


def parse_shared(name: str, size: int, json_length: int | None) -> InferRequest:
    """In a decoding worker: ``parse_request`` of a body the server put in shared memory."""
    # Attaching registers the segment with the resource tracker again, the server's own
    # (a spawned worker inherits it): the server's unlink then unregisters it once for both.
    shared = shared_memory.SharedMemory(name=name)
    view = shared.buf[:size]
    try:
        # Binary tensors after the JSON would be views of the segment: those need a copy.
        return parse_request(view if json_length is None else bytes(view), json_length)
    except BaseException as e:
        # The frames in its traceback hold views of the segment, which must go before it closes.
        e.__traceback__ = e.__context__ = None
        raise
    finally:
        view.release()
        shared.close()


def exit_with_parent(parent: int) -> None:
    """In a decoding worker: exit when the server is gone. A worker holds both ends of its
    task queue, so a server killed outright (SIGKILL) would otherwise leave it behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
