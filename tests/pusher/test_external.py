"""The Go data plane's loopback relay (capstan/pusher/external.py): FFmpeg reads the source only
through it, from the address the URL policy checked, with no redirect followed. No stack needed."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from capstan.net.urlpolicy import UrlPolicy, Use
from capstan.pusher.external import PinnedRelay, _event

BODY = bytes(range(256)) * 64


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            return
        first, _, last = (self.headers.get("Range") or "bytes=0-").removeprefix("bytes=").partition("-")
        start, end = int(first), int(last) if last else len(BODY) - 1
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(BODY)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Host-Seen", self.headers.get("Host", ""))
        self.end_headers()
        self.wfile.write(BODY[start:end + 1])

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def origin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _relay(url: str) -> PinnedRelay:
    target = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"}).check(url, Use.media)
    return PinnedRelay(target, timeout=5)


def test_the_relay_forwards_range_requests_to_the_checked_address(origin: int) -> None:
    relay = _relay(f"http://127.0.0.1:{origin}/file.mp4")
    try:
        request = urllib.request.Request(relay.url, headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-199/{len(BODY)}"
            assert response.read() == BODY[100:200]
        with pytest.raises(urllib.error.HTTPError) as wrong:  # only its own random path
            urllib.request.urlopen(relay.url.rsplit("/", 1)[0] + "/other", timeout=5)
        assert wrong.value.code == 404
    finally:
        relay.close()


def test_the_relay_follows_no_redirect(origin: int) -> None:
    relay = _relay(f"http://127.0.0.1:{origin}/moved.mp4")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(relay.url, timeout=5)
        assert refused.value.code == 502
        assert relay.error == "HTTP 302 (redirects are not followed)"
    finally:
        relay.close()


def test_publisher_lines_that_are_not_json_objects_are_ignored() -> None:
    assert _event(b'{"event": "joined"}\n') == {"event": "joined"}
    assert _event(b"garbage\n") == {} and _event(b"[1]\n") == {}
