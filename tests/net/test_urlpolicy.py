"""The URL policy: what a tenant's URL may reach, judged after DNS, and the HTTP client that
connects only to the addresses it checked. Connections are guarded by a tripwire, so a policy
that let a hostile URL through fails the test instead of sending a packet off the machine."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from capstan.net import fetch
from capstan.net.urlpolicy import UrlPolicy, UrlRefused, Use, redact_userinfo
from capstan.operator import callbacks

STRICT = UrlPolicy()
LOOPBACK_ALLOWED = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"})


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]
    return resolve


@pytest.fixture
def tripwire(monkeypatch) -> list[tuple]:
    """Every outgoing connection is recorded; any that is not to 127.0.0.1 is stopped before it is made."""
    made: list[tuple] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        made.append(address)
        if address[0] != "127.0.0.1":
            raise AssertionError(f"a connection to {address} would have left the machine")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return made


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fd00:ec2::254", "private"), ("fe80::1", "link-local"),
    ("10.0.0.1", "cluster network"), ("10.1.2.3", "private"), ("172.16.5.5", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "carrier-grade NAT"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("192.0.2.2", "non-public"),
])
def test_non_public_addresses_are_refused(address, why):
    policy = UrlPolicy.from_env({"CAPSTAN_CLUSTER_CIDRS": "10.0.0.0/24"})
    assert policy.address_refusal(address) == why


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address):
    assert STRICT.address_refusal(address) is None


def test_cluster_ranges_are_configurable_even_when_public():
    policy = UrlPolicy.from_env({"CAPSTAN_CLUSTER_CIDRS": "203.0.113.0/24, 198.51.100.0/24"})
    assert policy.address_refusal("203.0.113.7") == "cluster network"
    assert UrlPolicy().address_refusal("10.96.0.1") == "cluster network"  # kubeadm's default service range


def test_allowlist_opens_networks_and_names():
    policy = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "10.20.0.0/16",
                                 "CAPSTAN_URL_ALLOW_HOSTS": "hooks.internal, .svc.cluster.local"})
    assert policy.address_refusal("10.20.3.4") is None and policy.address_refusal("10.21.0.1") == "private"
    resolve = resolver({"hooks.internal": ["10.99.0.1"], "cb.ns.svc.cluster.local": ["10.96.4.4"],
                        "evil.example": ["10.96.4.4"]})
    assert policy.check("http://hooks.internal/x", Use.callback, resolve).addresses == ("10.99.0.1",)
    assert policy.check("https://cb.ns.svc.cluster.local/", Use.callback, resolve).port == 443
    with pytest.raises(UrlRefused, match="cluster network"):
        policy.check("http://evil.example/", Use.callback, resolve)
    with pytest.raises(UrlRefused):  # an allowed name does not open the address behind it for others
        policy.check("http://10.99.0.1/", Use.callback, resolve)


@pytest.mark.parametrize(("url", "message"), [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://x/", "scheme 'gopher'"),
    ("rtmp://live.example/app", "scheme 'rtmp' is not allowed for a callback URL"),
    ("http://user:pw@example.com/", "credentials in the URL"),
    ("http:///path", "no host"),
    ("http://example.com:99999/", "not a valid URL"),
])
def test_urls_that_do_not_parse_as_allowed(url, message):
    with pytest.raises(UrlRefused, match=message):
        STRICT.check(url, Use.callback, resolver({"example.com": ["93.184.216.34"]}))


def test_media_sources_may_use_rtmp():
    target = STRICT.check("rtmp://live.example/app/key", Use.media, resolver({"live.example": ["93.184.216.34"]}))
    assert (target.scheme, target.port, target.request_target) == ("rtmp", 1935, "/app/key")


def test_every_address_a_name_resolves_to_is_checked():
    resolve = resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(UrlRefused, match="resolves to a private address") as err:
        STRICT.check("http://mixed.example/", Use.callback, resolve)
    assert "10.0.0.5" not in str(err.value)  # the tenant learns nothing about the internal address


def test_unresolvable_host_is_refused():
    with pytest.raises(UrlRefused, match="does not resolve"):
        STRICT.check("http://nowhere.invalid/", Use.callback, resolver({}))


def test_redact_userinfo():
    text = "could not join room 'r' at wss://alice:hunter2@lk.example:7880/rtc: HTTP 401 from http://k@x/y"
    assert redact_userinfo(text) == "could not join room 'r' at wss://lk.example:7880/rtc: HTTP 401 from http://x/y"
    assert redact_userinfo("mail bob@example.com, see http://example.com/a@b") == (
        "mail bob@example.com, see http://example.com/a@b")


# --- delivery through the policy, with real sockets ------------------------------------------

class Receiver:
    """A loopback HTTP receiver answering a fixed status (and Location) to every POST."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[tuple[str, str, bytes]] = []  # (path, Host header, body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, self.headers.get("Host", ""), body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/cb", "http://169.254.169.254/latest/meta-data/",
                                 "http://10.0.0.1/", "http://[::1]:{port}/", "http://[fd00:ec2::254]/",
                                 "http://0x7f000001:{port}/", "http://localhost:{port}/"])
def test_hostile_callback_urls_are_refused_without_a_connection(url, receiver, tripwire):
    error = callbacks.deliver(url.format(port=receiver.port), b"{}", {"Content-Type": "application/json"},
                              timeout=2, policy=STRICT)
    assert error and error.startswith("refused by the URL policy"), error
    assert tripwire == [] and receiver.requests == []


def test_a_name_resolving_to_a_private_address_is_refused_without_a_connection(tripwire, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.77", port))])
    error = callbacks.deliver("http://internal.capstan.test/cb", b"{}", {}, timeout=2, policy=STRICT)
    assert error == ("refused by the URL policy: host internal.capstan.test resolves to a private address, which "
                     "tenant URLs may not reach (an operator can allow it: CAPSTAN_URL_ALLOW_CIDRS / "
                     "CAPSTAN_URL_ALLOW_HOSTS)")
    assert tripwire == []


def test_a_redirect_to_a_private_address_is_a_failure_and_not_followed(tripwire):
    r = Receiver(302, "http://10.0.0.1/steal")
    try:
        error = callbacks.deliver(f"http://127.0.0.1:{r.port}/cb", b'{"a":1}', {"Content-Type": "application/json"},
                                  timeout=2, policy=LOOPBACK_ALLOWED)
    finally:
        r.close()
    assert error == "HTTP 302 (redirects are not followed)"
    assert len(r.requests) == 1 and tripwire == [("127.0.0.1", r.port)]


def test_delivery_connects_to_the_checked_address_not_a_second_lookup(receiver, tripwire):
    """The name resolves once (here: to loopback, allowed); the request goes there with the URL's Host."""
    status = fetch.post(f"http://hooks.test:{receiver.port}/cb?x=1", b"hello", {"Content-Type": "text/plain"},
                        policy=LOOPBACK_ALLOWED, use=Use.callback, timeout=2,
                        resolve=resolver({"hooks.test": ["127.0.0.1"]}))
    assert status == 200
    assert receiver.requests == [("/cb?x=1", f"hooks.test:{receiver.port}", b"hello")]
    assert tripwire == [("127.0.0.1", receiver.port)]


def test_an_allowed_receiver_gets_the_callback(receiver):
    assert callbacks.deliver(f"http://127.0.0.1:{receiver.port}/cb", b"{}", {}, timeout=2,
                             policy=LOOPBACK_ALLOWED) is None
    assert len(receiver.requests) == 1
