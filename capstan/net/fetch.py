"""HTTP to a tenant's URL through the URL policy: the connection goes to the address the policy
checked (the Host header and the TLS name stay the URL's host), and redirects are never followed,
so neither DNS rebinding nor a 3xx can steer a request somewhere the policy refused.

`post` is synchronous (http.client; each socket operation has the timeout). `apost` is the async
client callback delivery uses: one total deadline for DNS, connect, send and the response head, so
a receiver trickling bytes cannot hold a try longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator

from capstan.net.urlpolicy import Resolver, Target, UrlPolicy, Use, system_resolver


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, address: str, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=context or ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def post(url: str, body: bytes, headers: dict[str, str], *, policy: UrlPolicy, use: Use, timeout: float,
         resolve: Resolver | None = None, tls: ssl.SSLContext | None = None) -> int:
    """POST once and return the HTTP status (a 3xx is returned, not followed).

    Raises UrlRefused before any connection when the policy refuses the URL, OSError or
    http.client.HTTPException when the request itself fails. `timeout` bounds DNS and each
    socket operation.
    """
    target = policy.check(url, use, resolve or system_resolver(timeout))
    with _connect(target, timeout, tls) as conn:
        conn.request("POST", target.request_target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(65536)
        return response.status


@contextlib.contextmanager
def _connect(target: Target, timeout: float, tls: ssl.SSLContext | None) -> Iterator[http.client.HTTPConnection]:
    """A connection to the first of the checked addresses that accepts one (nothing is sent to the
    ones that do not); closed on exit."""
    last: OSError | None = None
    for address in target.addresses:
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(target, address, timeout, tls)
        else:
            conn = _PinnedHTTPConnection(target, address, timeout)
        try:
            conn.connect()
        except OSError as exc:  # try the next checked address
            conn.close()
            last = exc
            continue
        try:
            yield conn
        finally:
            conn.close()
        return
    assert last is not None
    raise last


class FetchFailed(OSError):
    """A GET that did not return the whole body with 200."""


def get(url: str, *, policy: UrlPolicy, use: Use, timeout: float, max_bytes: int,
        resolve: Resolver | None = None, tls: ssl.SSLContext | None = None) -> bytes:
    """GET once and return the body (watermarks, background images): 200 only, a 3xx not followed,
    at most ``max_bytes``. Raises UrlRefused before any connection when the policy refuses the URL,
    FetchFailed for another status or a body too large, OSError when the request fails."""
    target = policy.check(url, use, resolve or system_resolver(timeout))
    with _connect(target, timeout, tls) as conn:
        conn.request("GET", target.request_target)
        response = conn.getresponse()
        if response.status != 200:
            raise FetchFailed(f"HTTP {response.status}")
        body = response.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise FetchFailed(f"larger than {max_bytes} bytes")
        return body


async def apost(url: str, body: bytes, headers: dict[str, str], *, policy: UrlPolicy, use: Use, deadline: float,
                resolve: Resolver | None = None, tls: ssl.SSLContext | None = None) -> int:
    """POST once within `deadline` seconds in all; the HTTP status (a 3xx is returned, not followed).

    Raises UrlRefused before any connection, TimeoutError past the deadline, OSError or
    http.client.HTTPException when the request fails."""
    return await asyncio.wait_for(_apost(url, body, headers, policy, use, deadline, resolve, tls), deadline)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


async def _apost(url: str, body: bytes, headers: dict[str, str], policy: UrlPolicy, use: Use, deadline: float,
                 resolve: Resolver | None, tls: ssl.SSLContext | None) -> int:
    loop = asyncio.get_running_loop()
    target = await loop.run_in_executor(None, policy.check, url, use, resolve or system_resolver(deadline))
    head = [f"POST {target.request_target} HTTP/1.1", f"Host: {_host_header(target)}",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    last: OSError | None = None
    for address in target.addresses:
        context = (tls or ssl.create_default_context()) if target.scheme == "https" else None
        try:
            # the same connect as `post` (to the checked address, bounded by the deadline), then async I/O
            raw = await loop.run_in_executor(None, socket.create_connection, (address, target.port), deadline)
        except OSError as exc:  # try the next checked address; nothing was sent
            last = exc
            continue
        reader, writer = await asyncio.open_connection(
            sock=raw, ssl=context, server_hostname=target.host if context else None)
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise http.client.BadStatusLine(status_line.decode("latin-1", "replace")[:100])
            return int(parts[1])
        finally:
            writer.close()
    assert last is not None
    raise last
