"""A network namespace joined to the host by a veth pair, for the stack's room servers.

WebRTC ignores loopback (libnice, aioice and libwebrtc skip it), so a room server cannot live on
127.0.0.1 like the rest of the stack; without a fence it would gather and offer eth0's addresses.
Each room server (Janus, LiveKit) therefore gets its own namespace with ``lo`` up, **no default
route** and no IPv6, and a /30 shared with the host: ``<prefix>.1`` inside, ``<prefix>.2`` on the
host. All its traffic stays on that /30.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from devstack.log import log

PREFIX_LEN = 30


class NetnsUnavailable(Exception):
    """The namespace cannot be made here (not root, no ``ip`` program, creation refused)."""


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or the namespace is not fenced as it must be."""


@dataclasses.dataclass(frozen=True)
class Netns:
    name: str  # the namespace (``ip netns``)
    host_if: str  # veth end on the host
    ns_if: str  # veth end inside the namespace
    host_address: str  # on host_if
    address: str  # on ns_if: the server's only address
    owner: str  # who lives there, for messages ("Janus", "LiveKit")

    @classmethod
    def for_net(cls, owner: str, base: str, short: str, net: int, second_octet: int) -> Netns:
        """``capstan-<base>[N]``, veth ``c<short>[N]-out``/``-in`` and 10.<second_octet>.N.0/30."""
        suffix = str(net) if net else ""
        return cls(
            name=f"capstan-{base}{suffix}",
            host_if=f"c{short}{suffix}-out",
            ns_if=f"c{short}{suffix}-in",
            host_address=f"10.{second_octet}.{net}.2",
            address=f"10.{second_octet}.{net}.1",
            owner=owner,
        )

    def exec_argv(self, *argv: str) -> list[str]:
        """Run argv inside; ``ip netns exec`` execs in place, so a pid we record is the program's own."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exists(self) -> bool:
        return Path(f"/run/netns/{self.name}").exists()

    def ensure(self) -> None:
        """Create (idempotently) the namespace and veth pair, addressed, up, without a default route."""
        if os.geteuid() != 0:
            raise NetnsUnavailable(
                f"creating the network namespace {self.name} for {self.owner} needs root "
                f"(this is uid {os.geteuid()}); {self.owner} is not started, and tests that need it fail"
            )
        if shutil.which("ip") is None:
            raise NetnsUnavailable(
                "the `ip` program (Debian iproute2) is missing; run devstack/install-system-deps.sh"
            )
        if not self.exists():
            res = _ip("netns", "add", self.name, check=False)
            if res.returncode != 0 and not self.exists():
                raise NetnsUnavailable(
                    f"cannot create the network namespace {self.name} for {self.owner}: {res.stderr.strip()}"
                )
            log(f"created network namespace {self.name}")
        ns_if_inside = _link_exists(self.ns_if, self.name)
        if _link_exists(self.host_if) and not ns_if_inside:
            # left over (its peer is not in our namespace, e.g. the namespace was replaced): recreate
            _ip("link", "del", self.host_if)
        if not ns_if_inside:
            if _link_exists(self.ns_if):  # a half-made pair: the inner end is still on the host
                _ip("link", "set", self.ns_if, "netns", self.name)
            else:
                _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
            log(f"created veth pair {self.host_if} (host) <-> {self.ns_if} ({self.name})")
        # No IPv6 on either end (no link-local addresses to offer as ICE candidates or to bind).
        _write_sysctl(None, f"net.ipv6.conf.{self.host_if}.disable_ipv6", "1")
        _write_sysctl(self.name, "net.ipv6.conf.all.disable_ipv6", "1")
        _write_sysctl(self.name, "net.ipv6.conf.default.disable_ipv6", "1")
        _ip("addr", "replace", f"{self.host_address}/{PREFIX_LEN}", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "replace", f"{self.address}/{PREFIX_LEN}", "dev", self.ns_if)
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        # Nobody but us adds routes there; make sure none leads out.
        routes = _ip("-n", self.name, "route", "show", "default").stdout.strip()
        if routes:
            raise NetnsError(f"network namespace {self.name} has a default route ({routes}); remove it")

    def delete(self) -> bool:
        """Delete the namespace (which also removes the veth pair). Returns True when it existed."""
        if not self.exists():
            return False
        _ip("netns", "del", self.name)
        if _link_exists(self.host_if):  # normally gone with its peer
            _ip("link", "del", self.host_if, check=False)
        return True

    def pids(self) -> list[int]:
        if not self.exists():
            return []
        res = _ip("netns", "pids", self.name, check=False)
        return [int(x) for x in res.stdout.split() if x.isdigit()]

    def delete_if_unused(self) -> None:
        """`down`: delete the namespace unless processes the stack did not start still run in it."""
        if os.geteuid() != 0 or not self.exists():
            return
        others = self.pids()
        if others:
            log(
                f"WARNING: network namespace {self.name} kept: processes not started by the stack "
                f"still run in it (pids {others}); stop them and run `down` again"
            )
        else:
            self.delete()
            log(f"deleted network namespace {self.name} and veth {self.host_if}/{self.ns_if}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def _link_exists(name: str, netns: str | None = None) -> bool:
    args = ("-n", netns) if netns else ()
    return _ip(*args, "link", "show", "dev", name, check=False).returncode == 0


def _write_sysctl(netns: str | None, key: str, value: str) -> None:
    """Set a per-namespace sysctl (best effort; IPv6 may be absent)."""
    path = "/proc/sys/" + key.replace(".", "/")
    cmd = ["sh", "-c", f"test -e {shlex.quote(path)} && echo {value} > {shlex.quote(path)} || true"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    subprocess.run(cmd, capture_output=True, timeout=30)
