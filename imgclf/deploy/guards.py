"""What keeps ``imgclf serve`` standing under hostile or unlucky clients, below the application itself.

- :class:`Limits`: what one request may carry and what decoding may hold.
- :class:`BodyLimit`: the body's size, enforced while it streams in, and its pace (a body that stalls gets a 408).
- :class:`DecodeBudget`: the memory all images being decoded at once may hold; a request that finds it spent waits
  a moment, then gets a 503 with Retry-After, so twenty small PNGs that decode to gigabytes cannot take the machine.
- :class:`GuardedH11`: uvicorn's HTTP protocol with a deadline for a request's headers (uvicorn itself waits
  forever for a client that connects and sends nothing, or a header a byte a minute).
- :func:`allowed_hosts`: the ``Host`` names the server answers to, against DNS rebinding.
- :func:`resolve_api_key`, :func:`key_matches`: the optional API key, from the command line, a file or the
  environment (a key on the command line shows in ``ps``).
"""
from __future__ import annotations

import asyncio
import ctypes
import hmac
import json
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..data.decode import BadImage
from ..errors import UserError

API_KEY_ENV = "IMGCLF_API_KEY"

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass
class Limits:
    """What one request may carry, and how long and how much the server spends on it.

    ``decode_memory_bytes`` is shared: every image being decoded at once holds its share (its size times the
    bytes per pixel its mode needs, from the header); one image that alone needs more is refused (413)."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16
    decode_memory_bytes: int = 256 * 1024 * 1024
    decode_wait_s: float = 2.0  # how long an image waits for decode memory before its request gets a 503
    timeout_s: float = 10.0  # for a request's headers, and between two parts of its body


class _TooLarge(Exception):
    pass


class _Stalled(Exception):
    pass


async def send_error(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """A JSON ``{"error": message}`` response straight on the ASGI channel."""
    body = json.dumps({"error": message}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes from its Content-Length, or as soon as the streamed
    bytes pass the limit, before any parser has buffered it; and answer 408 (closing the connection) when the
    next part of a body takes over ``timeout`` seconds to come."""

    def __init__(self, app, limit: int, timeout: float = 10.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await send_error(send, 413, self._message())
            return
        received, started, complete = 0, False, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # the body is in: a later receive waits for the disconnect, for as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                raise _Stalled from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await send_error(send, 413, self._message())
        except _Stalled:
            if not started:
                await send_error(send, 408, f"the request body stalled for over {self.timeout:g} s",
                                 {"Connection": "close"})

    def _message(self) -> str:
        return f"request body over the limit of {self.limit:,} bytes; send smaller images or raise --max-upload-mb"


class DecodeBudget:
    """Bytes that the images being decoded at once may hold together (threads decode, so a thread lock guards
    the count). :meth:`hold` reserves an image's share for as long as its decoding and conversion last."""

    def __init__(self, total: int, wait_s: float = 2.0) -> None:
        self.total, self.wait_s, self.used = total, wait_s, 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Raises :class:`BadImage`: "too large" for an image over the whole budget, "busy" when the budget stays
        spent for ``wait_s`` seconds."""
        if nbytes > self.total:
            raise BadImage(f"decoding this image needs about {nbytes / 2**20:,.0f} MB, over the server's "
                           f"{self.total / 2**20:,.0f} MB (--decode-memory-mb); send a smaller image", "too large")
        with self._free:
            if not self._free.wait_for(lambda: self.used + nbytes <= self.total, self.wait_s):
                raise BadImage("the server is busy decoding other images; retry in a moment", "busy")
            self.used += nbytes
        try:
            yield
        finally:
            with self._free:
                self.used -= nbytes
                self._free.notify_all()


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete ``header_timeout``
    seconds after it opened or after its previous response (uvicorn's keep-alive timer stops at the first byte)."""

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = getattr(config, "header_timeout", 10.0)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _expire(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # still waiting for a request's headers
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``Host`` header values (without port) the server answers: the loopback names, the address it is bound
    to, and ``extra`` (``--allowed-hosts``; ``*`` allows any). Bound to every interface, the machine's own names
    and addresses too. A page on another site that rebinds its name to 127.0.0.1 sends its own name, and is
    refused."""
    names = list(LOCAL_HOSTS)
    if host in WILDCARD_HOSTS:
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn()]
        try:
            names += socket.gethostbyname_ex(hostname)[2]
        except OSError:
            pass
    else:
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    names += [h.strip() for h in extra if h.strip()]
    return list(dict.fromkeys(n.lower() for n in names))


def resolve_api_key(key: str | None = None, key_file: str | None = None) -> str | None:
    """The key the server requires: ``key`` (``--api-key``), else the first line of ``key_file``
    (``--api-key-file``), else ``$IMGCLF_API_KEY``, else none. An empty key is a mistake, never "no key"."""
    where = "--api-key"
    if key is None and key_file is not None:
        where = f"--api-key-file {key_file}"
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if key is None and API_KEY_ENV in os.environ:
        where, key = f"${API_KEY_ENV}", os.environ[API_KEY_ENV]
    if key is not None and not key.strip():
        raise UserError(f"{where} is empty: give a key, or leave it out to serve without one")
    return key


def key_matches(headers: Mapping[str, str], key: str) -> bool:
    """``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, compared in constant time; a bare ``Authorization:
    KEY`` is not a scheme HTTP knows, and is refused."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(given.encode(), key.encode())


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system. Its threshold for serving a block as its own mapping
    grows with the blocks freed (up to 32 MB), after which large blocks come from per-thread heaps it keeps: a
    server whose threads each decoded one huge image would hold them all. A fixed 1 MB threshold stops that
    (measured: 16 concurrent worst-case PNGs peak at +140-205 MB instead of +225-640 MB). A no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
