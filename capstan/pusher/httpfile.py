"""An http(s) media file as a seekable file object, read with Range requests through the URL policy.

FFmpeg's own http client would resolve the host again and follow redirects, either of which could
steer the pusher to an address the policy refused. Here every request goes to the address the
policy checked (Host header and TLS server name stay the URL's host), a 3xx is an error, and every
socket operation has a timeout. PyAV reads it like a local file (``av.open(HttpFile(...))``).
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl

from capstan.net.urlpolicy import Target

CHUNK = 1 << 20  # one request per MiB read: a 720p30 file at 2.5 Mbit/s costs one request per ~3 s


class HttpError(OSError):
    """The server did not hand out the file (status, redirect, no Range support)."""


class _Pinned(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.target = target

    def connect(self) -> None:
        last: OSError | None = None
        for address in self.target.addresses:
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                last = exc
                continue
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.target.scheme == "https":
                raw = ssl.create_default_context().wrap_socket(raw, server_hostname=self.target.host)
            self.sock = raw
            return
        raise last or OSError("no address to connect to")


class HttpFile(io.RawIOBase):
    """Read-only, seekable view of one http(s) resource; the size comes from the first response."""

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        self.target, self.timeout = target, timeout
        self.conn: _Pinned | None = None
        self.pos = 0
        self.size: int | None = None
        self.buffer, self.buffer_at = b"", 0
        self._fetch(0)  # fails fast (status, redirect) before PyAV probes anything

    def _request(self, start: int, end: int) -> tuple[int, bytes, str | None]:
        for fresh in (False, True):  # a kept-alive connection the server closed is retried once
            if self.conn is None or fresh:
                if self.conn is not None:
                    self.conn.close()
                self.conn = _Pinned(self.target, self.timeout)
            try:
                self.conn.request("GET", self.target.request_target,
                                  headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
                response = self.conn.getresponse()
                return response.status, response.read(), response.getheader("Content-Range")
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def _fetch(self, start: int) -> None:
        status, body, content_range = self._request(start, start + CHUNK - 1)
        if 300 <= status < 400:
            raise HttpError(f"HTTP {status} (redirects are not followed)")
        if status == 416:  # at or beyond the end
            self.buffer, self.buffer_at = b"", start
            return
        if status == 200:  # no Range support: the whole body came at once
            self.size = len(body)
            self.buffer, self.buffer_at = body, 0
            return
        if status != 206:
            raise HttpError(f"HTTP {status}")
        if content_range and "/" in content_range and not content_range.endswith("/*"):
            self.size = int(content_range.rsplit("/", 1)[1])
        self.buffer, self.buffer_at = body, start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        else:
            if self.size is None:
                raise OSError("size unknown")
            self.pos = self.size + offset
        return self.pos

    def readinto(self, out: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.size is not None and self.pos >= self.size:
            return 0
        inside = self.buffer_at <= self.pos < self.buffer_at + len(self.buffer)
        if not inside:
            self._fetch(self.pos)
            if not self.buffer_at <= self.pos < self.buffer_at + len(self.buffer):
                return 0
        begin = self.pos - self.buffer_at
        data = self.buffer[begin:begin + len(out)]
        out[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        super().close()
