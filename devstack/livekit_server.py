"""LiveKit (livekit-server, built by build.sh) as the stack's room server: namespace, keys, config.

It runs like Janus in a network namespace of its own (devstack/netns.py), ``capstan-lk``, on
10.214.0.1, joined to the host by the veth ``clk-out`` 10.214.0.2 / ``clk-in`` 10.214.0.1 and
with no default route, as ``ip netns exec capstan-lk livekit-server-<v> --config <state>/livekit/config.yaml``.
devstack/stack.py starts, probes and stops it.

Nothing in the configuration reaches past the namespace: no external-IP lookup
(``use_external_ip: false``, ``node_ip`` set, so the server itself uses no STUN server), ICE only
on ``clk-in``, no TURN, no Redis, no webhooks. When no STUN server is configured the server hands
clients Google's and Twilio's public ones in the join response; ``stun_servers`` names a port on
the namespace's own address instead (nothing answers there; clients still get their host
candidates, which are all the veth needs).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from devstack.janus_server import SFU_NET
from devstack.netns import Netns

NET = Netns.for_net("LiveKit", "lk", "lk", SFU_NET, 214)
PORT = 7880  # HTTP: signalling (ws://), Twirp RoomService, health (GET / answers "OK")
RTC_TCP_PORT = 7881  # ICE over TCP
RTC_PORT_RANGE = (50000, 50999)  # ICE over UDP
UNUSED_STUN_PORT = 3478  # named to clients as STUN server; nothing listens (see above)
URL = f"ws://{NET.address}:{PORT}"
HTTP_URL = f"http://{NET.address}:{PORT}"


def load_or_create_keys(keys_file: Path) -> tuple[str, str]:
    """The stack's API key and secret: made once, kept in the state dir, the same after a restart."""
    keys = read_keys(keys_file)
    if keys and keys[0] and len(keys[1]) >= 32:
        return keys
    key, secret = f"API{secrets.token_hex(6)}", secrets.token_urlsafe(32)  # secret: 43 chars
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = keys_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"api_key": key, "api_secret": secret}) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(keys_file)
    return key, secret


def read_keys(keys_file: Path) -> tuple[str, str] | None:
    """The stored key and secret, or None before the first `up`."""
    try:
        data = json.loads(keys_file.read_text())
        return str(data["api_key"]), str(data["api_secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def config_files(api_key: str, api_secret: str) -> dict[str, str]:
    """The configuration folder's files by name (``config.yaml``; JSON is valid YAML)."""
    config = {
        "port": PORT,
        "bind_addresses": [NET.address],
        "rtc": {
            "node_ip": NET.address,
            "use_external_ip": False,
            "interfaces": {"includes": [NET.ns_if]},
            "tcp_port": RTC_TCP_PORT,
            "port_range_start": RTC_PORT_RANGE[0],
            "port_range_end": RTC_PORT_RANGE[1],
            "enable_loopback_candidate": False,
            "stun_servers": [f"{NET.address}:{UNUSED_STUN_PORT}"],
        },
        "turn": {"enabled": False},
        "keys": {api_key: api_secret},
        "logging": {"level": "info", "json": False},
    }
    return {"config.yaml": json.dumps(config, indent=2) + "\n"}


def argv(binary: Path, conf_dir: Path) -> list[str]:
    return NET.exec_argv(str(binary), "--config", str(conf_dir / "config.yaml"))
