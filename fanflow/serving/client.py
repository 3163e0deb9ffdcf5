"""Calling V2 servers: the gateway's calls to its members (async, with a deadline) and a
small blocking client for the command line."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np

# httpcore tries `import sniffio` on every request; since anyio stopped depending on it, a
# missing sniffio means a failed import (a search of sys.path) on each call, several per
# request (encode/httpcore#1103). Recording the absence makes those imports fail at once.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)

from fanflow.serving import binary, wire
from fanflow.serving.http_pool import ConnectFailed, HTTPPool, Reply
from fanflow.serving.protocol import check_model_name
from fanflow.serving.wire import TagBatch


@dataclass(frozen=True)
class Member:
    """A model server the gateway asks: its model's name (also the member's name in
    provenance) and its base URL."""

    name: str
    url: str

    @property
    def model_path(self) -> str:
        """The model's path on its server (below any path in ``url``)."""
        return f"/v2/models/{self.name}"


def members_from(specs) -> list[Member]:
    """Members from announced endpoints (``{"url", "model"}``), ``"NAME=URL"`` strings or
    Member objects; names must be distinct."""
    members = []
    for spec in specs:
        if isinstance(spec, Member):
            member = spec
        elif isinstance(spec, dict):
            if not isinstance(spec.get("url"), str) or not isinstance(spec.get("model"), str):
                raise ValueError(f"a member is described by {{'url': ..., 'model': ...}}, got {spec!r}")
            member = Member(spec["model"], spec["url"])
        elif isinstance(spec, str) and "=" in spec:
            name, _, url = spec.partition("=")
            member = Member(name, url)
        else:
            raise ValueError(
                f"cannot read a member from {spec!r} (expected NAME=URL or an announced endpoint)"
            )
        check_model_name(member.name)
        if urlsplit(member.url).scheme not in ("http", "https"):
            raise ValueError(f"member {member.name}: {member.url!r} is not an http(s) URL")
        members.append(Member(member.name, member.url.rstrip("/")))
    if not members:
        raise ValueError("an ensemble needs at least one member")
    names = [m.name for m in members]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"members must have distinct names; repeated: {duplicates}")
    return members


@dataclass
class MemberAnswer:
    member: Member
    outcome: str  # ok | timeout | unreachable | rejected | error | malformed
    seconds: float
    batch: TagBatch | None = None
    response: dict | None = None
    status: int | None = None  # the HTTP status, when the member answered
    error: str | None = None  # why the member gave no usable answer (no addresses, no OS errors)
    detail: str | None = None  # the member's own message when it refused the request (4xx)
    log_detail: str | None = None  # what went wrong in full (addresses, system errors): for the log

    @property
    def ok(self) -> bool:
        return self.batch is not None


def _error_text(body: bytes, reason: str) -> str:
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return payload["error"]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace") or reason


async def member_request(
    pool: HTTPPool,
    member: Member,
    method: str,
    path: str,
    timeout: float,
    body: list | None = None,
    headers: dict | None = None,
    read: Callable[[bytes, int | None], dict] | None = None,
) -> MemberAnswer:
    """One request to a member, answered within ``timeout`` seconds or given up (the
    connection is then closed, which tells the member to drop the work); never raises for
    the member's failures. ``path`` is relative to the member's model URL; ``body`` is a list
    of parts (never joined); ``read`` turns a 200 answer's body (and its JSON header's length,
    for binary data) into the answer's ``response`` (plain JSON unless told otherwise). What
    went wrong is said in the answer without addresses or system errors, and in full in its
    ``log_detail``."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reply = await pool.request(method, member.model_path + path, body, headers)
    except (TimeoutError, ConnectionError) as e:
        return _failed(member, e, time.perf_counter() - start, timeout)
    return _answered(member, reply, time.perf_counter() - start, read)


async def infer_members(
    pools: Mapping[str, HTTPPool],
    members: list[Member],
    body: list,
    timeout: float,
    headers: dict | None = None,
) -> list[MemberAnswer]:
    """Send an inference request (its body's parts) to every member at once and read their
    tags, in member order; each member has ``timeout`` seconds. The requests are all written
    before the first answer is awaited, and each answer is read as it comes."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    calls = {pools[m.name].send("POST", m.model_path + "/infer", body, headers): m for m in members}
    answers: dict[str, MemberAnswer] = {}
    # One wake-up for whatever comes first, an answer or the deadline (asyncio.wait would make
    # a waiter, a timer and callbacks anew on every answer).
    arrived: list[asyncio.Future] = []
    expired = False
    wake = loop.create_future()

    def answered(call: asyncio.Future) -> None:
        arrived.append(call)
        if not wake.done():
            wake.set_result(None)

    def expire() -> None:
        nonlocal expired
        expired = True
        if not wake.done():
            wake.set_result(None)

    for call in calls:
        call.add_done_callback(answered)
    timer = loop.call_later(timeout, expire)
    try:
        while len(answers) < len(calls):
            if not arrived:
                if expired:
                    break
                await wake
                wake = loop.create_future()
                continue
            seconds = time.perf_counter() - start
            while arrived:
                call = arrived.pop()
                member = calls[call]
                error = call.exception()
                if error is None:
                    answer = _tags(_answered(member, call.result(), seconds, binary.decode))
                elif isinstance(error, ConnectionError):
                    answer = _failed(member, error, seconds, timeout)
                else:
                    raise error
                answers[member.name] = answer
    finally:
        timer.cancel()
        for call in calls:
            call.cancel()  # those past the deadline, or all when this request is cancelled
    for member in calls.values():
        if member.name not in answers:
            answers[member.name] = _failed(member, TimeoutError(), time.perf_counter() - start, timeout)
    return [answers[m.name] for m in members]


def _failed(member: Member, error: Exception, seconds: float, timeout: float) -> MemberAnswer:
    if isinstance(error, TimeoutError):
        return MemberAnswer(member, "timeout", seconds, error=f"no answer within {timeout:.3g} s")
    if isinstance(error, ConnectFailed):
        return MemberAnswer(member, "unreachable", seconds, error="unreachable", log_detail=str(error))
    return MemberAnswer(member, "error", seconds, error="the connection failed", log_detail=str(error))


def _answered(
    member: Member, reply: Reply, seconds: float, read: Callable[[bytes, int | None], dict] | None
) -> MemberAnswer:
    status, raw = reply.status, reply.body
    if status != 200:
        if 400 <= status < 500:
            detail = _error_text(raw, reply.reason)
            outcome = "rejected" if status in (400, 413) else "error"
            return MemberAnswer(
                member, outcome, seconds, status=status, error=f"answered {status}: {detail}", detail=detail
            )
        return MemberAnswer(
            member, "error", seconds, status=status, error=f"answered {status}", log_detail=repr(raw[:300])
        )
    json_length = reply.headers.get(binary.HEADER.lower())
    try:
        length = int(json_length) if json_length and json_length.isdigit() else None
        payload = read(raw, length) if read else (json.loads(raw) if raw else {})
    except ValueError as e:
        return MemberAnswer(
            member,
            "malformed",
            seconds,
            status=200,
            error="sent an answer fanflow cannot read",
            log_detail=str(e),
        )
    return MemberAnswer(member, "ok", seconds, response=payload, status=200)


def _tags(answer: MemberAnswer) -> MemberAnswer:
    """The answer with its tags read (``batch``), or marked malformed."""
    if answer.response is not None:
        try:
            answer.batch = wire.decode(answer.response)
        except ValueError as e:
            answer.outcome, answer.error = "malformed", "sent an answer fanflow cannot read"
            answer.log_detail = f"tags that cannot be read: {e}"
    return answer


# -- a blocking client for the command line -------------------------------------------------


class ClientError(Exception):
    """A server that cannot be reached or that refused a request; the message says which."""


class V2Client:
    """A fanflow V2 server (a model server or the gateway). ``url`` is the server's address
    (``http://host:port``) or a model's (``http://host:port/v2/models/NAME``)."""

    def __init__(self, url: str, timeout: float = 60.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"not an http(s) URL: {url!r}")
        self.base = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/")
        self.model = None
        if path.startswith("/v2/models/"):
            self.model = path.removeprefix("/v2/models/").split("/")[0]
        elif path not in ("", "/v2"):
            raise ClientError(f"{url}: expected a server's address or .../v2/models/NAME")
        self._http = httpx.Client(base_url=self.base, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> V2Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> dict | list:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            raise ClientError(f"cannot reach {self.base}: {e}") from None
        except httpx.TimeoutException:
            raise ClientError(f"{self.base} did not answer in time") from None
        except httpx.HTTPError as e:
            raise ClientError(f"{self.base}: {type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise ClientError(
                f"{self.base}{path} answered {response.status_code}: {_error_text(response.content, response.reason_phrase)}"
            )
        json_length = response.headers.get(binary.HEADER)
        try:
            if json_length is not None:
                return binary.decode(response.content, int(json_length))
            return response.json()
        except ValueError:
            raise ClientError(f"{self.base}{path} answered with a body that cannot be read") from None

    def model_name(self) -> str:
        if self.model is None:
            index = self._call("POST", "/v2/repository/index")
            names = [e.get("name") for e in index if isinstance(e, dict)] if isinstance(index, list) else []
            if len(names) != 1:
                raise ClientError(
                    f"{self.base} serves {len(names)} models; give the model's URL (.../v2/models/NAME)"
                )
            self.model = names[0]
        return self.model

    def metadata(self) -> dict:
        return self._call("GET", f"/v2/models/{self.model_name()}")

    def input_shape(self) -> tuple[int, ...]:
        """The (T, H, W) of one clip, from the model's metadata."""
        metadata = self.metadata()
        try:
            (clips,) = [t for t in metadata["inputs"] if t["name"] == wire.INPUT]
            shape = tuple(int(d) for d in clips["shape"][1:])
        except (KeyError, TypeError, ValueError):
            raise ClientError(f"{self.base}: the model's metadata has no '{wire.INPUT}' input") from None
        return shape

    def infer(self, clips: np.ndarray, request_id: str | None = None) -> dict:
        """The answer for ``clips``, sent and answered as binary tensor data."""
        parts, json_length = wire.binary_request(clips, request_id)
        return self._call(
            "POST",
            f"/v2/models/{self.model_name()}/infer",
            content=b"".join(parts),
            headers={"content-type": "application/octet-stream", binary.HEADER: str(json_length)},
        )
