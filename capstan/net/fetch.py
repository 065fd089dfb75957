"""HTTP to a tenant's URL through the URL policy: the connection goes to the address the policy
checked (the Host header and the TLS name stay the URL's host), and redirects are never followed,
so neither DNS rebinding nor a 3xx can steer a request somewhere the policy refused.

Synchronous (http.client) for today's callback delivery; an async client can reuse
`UrlPolicy.check` and connect to `Target.addresses` the same way.
"""

from __future__ import annotations

import http.client
import socket
import ssl

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
    last: OSError | None = None
    for address in target.addresses:
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(target, address, timeout, tls)
        else:
            conn = _PinnedHTTPConnection(target, address, timeout)
        try:
            try:
                conn.connect()
            except OSError as exc:  # try the next checked address; nothing was sent
                last = exc
                continue
            conn.request("POST", target.request_target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            return response.status
        finally:
            conn.close()
    assert last is not None
    raise last
