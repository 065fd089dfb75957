"""Every request the page makes goes through this forward proxy, held to the URL policy.

Chromium is started with ``--proxy-server`` pointing here and ``--proxy-bypass-list=<-loopback>``
(loopback is proxied too), so sub-resources, redirects (each hop is a new proxied request),
fetch/XHR, iframes and WebSockets (tunnelled with CONNECT) all arrive here. For each one the
host is resolved once and every address checked by :class:`~capstan.net.urlpolicy.UrlPolicy`;
the connection then goes to exactly those checked addresses (no second DNS lookup for an
attacker to rebind). Playwright's request interception is not enough on its own: it does not see
the hops of a redirect. A refused request is answered ``403`` without any connection, counted
and logged, and the page (and the recording) goes on.

Plain-HTTP requests are forwarded one per connection (``Connection: close``), so a kept-alive
client connection can never carry a second request to a host that was not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from capstan.net.urlpolicy import Resolver, UrlPolicy, UrlRefused, Use

log = logging.getLogger("capstan.panorama.guard")

HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
HOP_HEADERS = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")
# The browser's own services (its updater, account check, safe browsing, hints, time): not the page's,
# refused without a DNS lookup. CAPSTAN_PANORAMA_DENY_HOSTS replaces the list (empty: none), e.g. for a
# page that uses Google sign-in (accounts.google.com).
ENV_DENY_HOSTS = "CAPSTAN_PANORAMA_DENY_HOSTS"
BROWSER_SERVICE_HOSTS = (
    "update.googleapis.com", "accounts.google.com", "clients2.google.com", "clients4.google.com",
    "clientservices.googleapis.com", "safebrowsing.googleapis.com", "safebrowsingohttpgateway.googleapis.com",
    "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com", "redirector.gvt1.com",
    "edgedl.me.gvt1.com", "dl.google.com", "www.googleapis.com",
)


def browser_service_hosts(env: dict[str, str]) -> frozenset[str]:
    given = env.get(ENV_DENY_HOSTS)
    if given is None:
        return frozenset(BROWSER_SERVICE_HOSTS)
    return frozenset(h.strip().lower().rstrip(".") for h in given.replace(",", " ").split() if h.strip())


def target_host(url: str) -> str:
    """The host a checked URL names (pure)."""
    return (urlsplit(url).hostname or "").lower().rstrip(".")


@dataclass(frozen=True)
class Refusal:
    target: str  # host:port or the URL without its query
    reason: str


def parse_request_head(head: bytes) -> tuple[str, str, str, list[bytes]]:
    """Method, target, version and header lines of a request head (pure). Raises ValueError."""
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    return parts[0], parts[1], parts[2], [line for line in lines[1:] if line]


def checked_url(method: str, target: str) -> str:
    """The URL the policy judges for a proxied request (pure): ``https://host:port/`` for a CONNECT
    tunnel (TLS or a WebSocket), the absolute URL itself for plain HTTP."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"bad CONNECT target {target!r}")
        return f"https://{host}:{port}/"
    if not target.lower().startswith("http://"):
        raise ValueError("a proxied request needs an absolute http:// URL")
    return target


def origin_form(method: str, url: str, version: str, headers: list[bytes]) -> bytes:
    """The request head to send to the origin server: origin-form target, hop-by-hop headers
    replaced by ``Connection: close`` (pure)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
    lines = [f"{method} {path} {version}".encode("latin-1"), *kept, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def describe_target(method: str, target: str) -> str:
    return target if method == "CONNECT" else target.split("?", 1)[0][:200]


class EgressGuard:
    """The proxy, on 127.0.0.1 in its own thread; :attr:`refused` counts the refusals."""

    def __init__(self, policy: UrlPolicy, *, resolve: Resolver | None = None,
                 deny_hosts: frozenset[str] = frozenset()) -> None:
        self.policy, self.resolve, self.deny_hosts = policy, resolve, deny_hosts
        self.refused = 0
        self.forwarded = 0
        self.recent: deque[Refusal] = deque(maxlen=10)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EgressGuard:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="egress-guard", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _refuse(self, refusal: Refusal) -> None:
        with self._lock:
            self.refused += 1
            self.recent.append(refusal)
        log.warning("refused a page request to %s: %s", refusal.target, refusal.reason)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
        if len(head) > HEAD_LIMIT:
            await _reply(writer, 431, "Request Header Fields Too Large")
            return
        try:
            method, target, version, headers = parse_request_head(head[:-4])
            url = checked_url(method, target)
        except ValueError as exc:
            await _reply(writer, 400, str(exc))
            return
        if target_host(url) in self.deny_hosts:
            self._refuse(Refusal(describe_target(method, target), "one of the browser's own services, not the page's "
                                                                  f"(not resolved; {ENV_DENY_HOSTS})"))
            await _reply(writer, 403, "refused: a browser service")
            return
        loop = asyncio.get_running_loop()
        try:
            checked = await loop.run_in_executor(None, self.policy.check, url, Use.page, self.resolve)
        except UrlRefused as exc:
            self._refuse(Refusal(describe_target(method, target), str(exc)))
            await _reply(writer, 403, f"refused by the URL policy: {exc}")
            return
        upstream = await _connect(checked.addresses, checked.port)
        if upstream is None:
            await _reply(writer, 502, "could not connect")
            return
        up_reader, up_writer = upstream
        with self._lock:
            self.forwarded += 1
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(origin_form(method, url, version, headers))
                await up_writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


async def _connect(addresses: tuple[str, ...], port: int
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """To the first checked address that accepts (nothing is sent to the others)."""
    for address in addresses:
        try:
            return await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT_SECONDS)
        except (TimeoutError, OSError):
            continue
    return None


async def _reply(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = text.encode("utf-8", "replace")[:2000]
    writer.write(f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Error'}\r\n"
                 f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode("latin-1") + body)
    with contextlib.suppress(OSError):
        await writer.drain()


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    tasks = [asyncio.ensure_future(pipe(a_reader, b_writer)), asyncio.ensure_future(pipe(b_reader, a_writer))]
    # the origin's side ending ends the exchange (a request of plain HTTP is answered, a tunnel closed)
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if tasks[1] in done:
        for task in pending:
            task.cancel()
    else:
        await asyncio.wait(pending, timeout=None)
