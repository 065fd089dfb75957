"""The one policy for URLs a tenant gives: callbacks now; the pusher's sources, watermark and
background images and the web recorder's pages use it as they are built.

A tenant who may create a task must not be able to make Capstan's components (which sit inside
the cluster network) reach what the tenant itself cannot: loopback, link-local (cloud metadata at
169.254.169.254 and fd00:ec2::254), private and CGNAT ranges, and the cluster's service and pod
networks. The host is resolved once, every address it resolves to is checked, and the caller
connects to exactly those checked addresses (no second DNS lookup an attacker could rebind).
An operator allowlist (networks and host names) opens what an installation needs, e.g. an
in-cluster callback receiver.

Everything here is pure except `system_resolver` (DNS, with a timeout).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses; raises OSError

ENV_ALLOW_CIDRS = "CAPSTAN_URL_ALLOW_CIDRS"
ENV_ALLOW_HOSTS = "CAPSTAN_URL_ALLOW_HOSTS"
ENV_CLUSTER_CIDRS = "CAPSTAN_CLUSTER_CIDRS"
# kubeadm's default service and pod networks; installations set theirs (chart: urlPolicy.clusterCidrs).
DEFAULT_CLUSTER_CIDRS = ("10.96.0.0/12", "10.244.0.0/16")
DEFAULT_PORTS = {"http": 80, "https": 443, "rtmp": 1935, "rtmps": 443}


class Use(StrEnum):
    """What a URL is for; each use allows its own schemes."""

    callback = "callback"
    media = "media"  # the pusher's file or live source
    image = "image"  # watermarks, background images
    page = "page"  # the web recorder's page


SCHEMES: Mapping[Use, frozenset[str]] = {
    Use.callback: frozenset({"http", "https"}),
    Use.media: frozenset({"http", "https", "rtmp", "rtmps"}),
    Use.image: frozenset({"http", "https"}),
    Use.page: frozenset({"http", "https"}),
}

# Named non-public ranges, checked in this order so a refusal says what the address is.
_RANGES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"), ("224.0.0.0/4", "multicast"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("fe80::/10", "link-local"),
    ("fc00::/7", "private"), ("ff00::/8", "multicast"),
)
NAMED_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in _RANGES)


class UrlRefused(ValueError):
    """The URL may not be fetched; the message says why without revealing resolved addresses."""


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `addresses` (in order), speak to `host` (Host header, TLS name)."""

    scheme: str
    host: str
    port: int
    request_target: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]


def _networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _split(value: str | None) -> list[str]:
    return [p for p in re.split(r"[,\s]+", value or "") if p]


def _unwrap(addr: IPAddress) -> IPAddress:
    """IPv4 carried inside IPv6 (::ffff:a.b.c.d, NAT64 64:ff9b::/96) is judged as that IPv4."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


@dataclass(frozen=True)
class UrlPolicy:
    """Which destinations a tenant's URL may reach. Defaults refuse every non-public address."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()  # exact names, or ".example.internal" for a domain and its subdomains
    cluster_networks: tuple[IPNetwork, ...] = _networks(DEFAULT_CLUSTER_CIDRS)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UrlPolicy:
        """CAPSTAN_URL_ALLOW_CIDRS, CAPSTAN_URL_ALLOW_HOSTS, CAPSTAN_CLUSTER_CIDRS (comma-separated)."""
        env = os.environ if env is None else env
        cluster = env.get(ENV_CLUSTER_CIDRS)
        return cls(allow_networks=_networks(_split(env.get(ENV_ALLOW_CIDRS))),
                   allow_hosts=tuple(h.lower().rstrip(".") for h in _split(env.get(ENV_ALLOW_HOSTS))),
                   cluster_networks=_networks(_split(cluster) if cluster is not None else DEFAULT_CLUSTER_CIDRS))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith(".") and (host.endswith(h) or host == h[1:]))
                   for h in self.allow_hosts)

    def address_refusal(self, address: str) -> str | None:
        """Why this address may not be reached (e.g. "loopback"), or None when it may."""
        addr = _unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
        if any(addr in net for net in self.allow_networks):
            return None
        if any(addr in net for net in self.cluster_networks):
            return "cluster network"
        for net, why in NAMED_RANGES:
            if addr in net:
                return why
        if not addr.is_global:
            return "non-public"
        return None

    def parse(self, url: str, use: Use) -> tuple[str, str, int, str]:
        """Scheme, host, port and request target of `url`, or UrlRefused (pure: no DNS)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES[use]:
            allowed = ", ".join(sorted(SCHEMES[use]))
            raise UrlRefused(f"scheme {scheme or '(none)'!r} is not allowed for a {use.value} URL ({allowed})")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials in the URL are not allowed")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise UrlRefused("the URL has no host")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return scheme, host, port or DEFAULT_PORTS[scheme], target

    def check(self, url: str, use: Use, resolve: Resolver | None = None) -> Target:
        """Parse, resolve once and check every address; the Target to connect to, or UrlRefused."""
        scheme, host, port, target = self.parse(url, use)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = (resolve or system_resolver())(host, port)
            except OSError as exc:
                raise UrlRefused(f"host {host} does not resolve ({type(exc).__name__})") from None
            if not addresses:
                raise UrlRefused(f"host {host} does not resolve")
        if literal is None and self.host_allowed(host):
            return Target(scheme, host, port, target, tuple(addresses))
        for address in addresses:
            why = self.address_refusal(address)
            if why is not None:
                where = "is" if literal is not None else "resolves to"
                raise UrlRefused(f"host {host} {where} a {why} address, which tenant URLs may not reach "
                                 f"(an operator can allow it: {ENV_ALLOW_CIDRS} / {ENV_ALLOW_HOSTS})")
        return Target(scheme, host, port, target, tuple(addresses))


def system_resolver(timeout: float = 5.0) -> Resolver:
    """getaddrinfo with a deadline (it has none of its own), TCP addresses only, in resolver order."""

    def resolve(host: str, port: int) -> list[str]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolve")
        try:
            future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
            try:
                infos = future.result(timeout)
            except FutureTimeout:
                raise OSError(f"resolving {host} timed out after {timeout} s") from None
        finally:
            pool.shutdown(wait=False)
        out: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            if sockaddr[0] not in out:
                out.append(str(sockaddr[0]))
        return out

    return resolve


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]*@")


def redact_userinfo(text: str) -> str:
    """Drop `user:password@` from every URL in `text` (messages, Events and logs must not carry them)."""
    return _USERINFO.sub(r"\1", text)
