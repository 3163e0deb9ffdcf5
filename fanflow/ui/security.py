"""What keeps the UI safe on a shared machine: answers only to the host names it serves
(no DNS rebinding), refuses state-changing requests from other sites (a token every page
carries, checked with the request's Origin), and tells the browser to run only the UI's own
scripts (a Content-Security-Policy on every page; stored HTML is sandboxed where it is
served)."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_FIELD = "csrf"
TOKEN_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 1 << 20  # a form posted without JavaScript (the launch form): small

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Stored HTML and SVG are the user's files: served in a sandbox (no scripts, no forms, an
# origin of their own), so that a report cannot act as the UI.
STORED_POLICY = "sandbox; default-src 'none'; img-src data: 'self'; media-src data: 'self'; style-src 'unsafe-inline'"


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Guard:
    """ASGI middleware: host names, cross-site requests, and the response headers."""

    def __init__(self, app, token: str, hosts: set[str]):
        self.app = app
        self.token = token
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in self.hosts:
            return await PlainTextResponse("unknown host name", 400)(scope, receive, send)
        if scope["method"] not in SAFE_METHODS:
            refused, receive = await self._check(scope, receive, headers)
            if refused:
                return await PlainTextResponse(refused, 403)(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                out = Headers(raw=message["headers"])
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
                if "content-security-policy" not in out:
                    extra.append((b"content-security-policy", PAGE_POLICY.encode()))
                    extra.append((b"x-frame-options", b"DENY"))
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _check(self, scope, receive, headers: Headers):
        """Why a state-changing request is refused (or None), and the body to read it from."""
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return "cross-site request refused", receive
        if headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return "cross-site request refused", receive
        token = headers.get(TOKEN_HEADER)
        if token is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body = await _read_body(receive, MAX_FORM_BYTES)
            if body is None:
                return "form too large", receive
            token = (parse_qs(body.decode("latin-1")).get(TOKEN_FIELD) or [None])[0]
            receive = _replay(body)
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            return "missing or wrong form token: reload the page and try again", receive
        return None, receive


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
