"""Janus (Debian's, VideoRoom plugin) as the stack's room server: its namespace and configuration.

Janus runs as ``ip netns exec capstan-sfu janus -F <state>/janus -o`` (see devstack/netns.py);
devstack/stack.py starts, probes and stops it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devstack.netns import Netns

# Its own network namespace, joined to the host by a veth pair. The namespace has no default
# route, so Janus can reach only 10.213.0.0/30 (and its own loopback). CAPSTAN_SFU_NET=N
# (1..255, default 0) gives a second stack on the same host its own namespace capstan-sfuN,
# veth csfuN-out/csfuN-in and 10.213.N.0/30 (and LiveKit's capstan-lkN, 10.214.N.0/30).
SFU_NET = int(os.environ.get("CAPSTAN_SFU_NET") or 0)
# NET.address: Janus's HTTP API, admin API and only ICE candidate; NET.host_address: the only
# local address WebRTC clients may offer (ROOM_HOST_ADDRESS).
NET = Netns.for_net("Janus", "sfu", "sfu", SFU_NET, 213)
PORT = 8088
ADMIN_PORT = 7088
RTP_PORTS = "20000-20999"
# Fixed dev credentials (reachable only from this host, like the MinIO ones).
ADMIN_SECRET = "capstan-janus-admin"  # Janus admin API (general.admin_secret)
ADMIN_KEY = "capstan-room-admin"  # VideoRoom admin_key: needed to create rooms
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGINS_DISABLED = "audiobridge duktape echotest lua nosip recordplay sip streaming textroom videocall voicemail"
TRANSPORTS_DISABLED = "mqtt nanomsg pfunix rabbitmq websockets"
EVENTS_DISABLED = "gelfevh mqttevh nanomsgevh rabbitmqevh sampleevh wsevh"
URL = f"http://{NET.address}:{PORT}/janus"
ADMIN_URL = f"http://{NET.address}:{ADMIN_PORT}/admin"


def argv(conf_dir: Path) -> list[str]:
    return NET.exec_argv("janus", "-F", str(conf_dir), "-o")


def missing() -> str | None:
    """Why Janus cannot be started here (not installed), or None."""
    if shutil.which("janus") is None or not (LIB_DIR / "plugins" / "libjanus_videoroom.so").exists():
        return "the Debian package `janus` is not installed; run `make system-deps` (devstack/install-system-deps.sh)"
    return None


def config_files(conf_dir: Path) -> dict[str, str]:
    """The files of Janus's configuration folder (``janus -F``), by name."""
    lib = LIB_DIR

    def disabled(names: str) -> str:
        return ",".join(f"libjanus_{n}.so" for n in names.split())

    return {
        "janus.jcfg": f"""# Written by devstack/stack.py; rewritten by every `up`.
general: {{
	configs_folder = "{conf_dir}"
	plugins_folder = "{lib / "plugins"}"
	transports_folder = "{lib / "transports"}"
	events_folder = "{lib / "events"}"
	loggers_folder = "{lib / "loggers"}"
	debug_level = 4
	debug_timestamps = true
	interface = "{NET.address}"
	admin_secret = "{ADMIN_SECRET}"
	server_name = "capstan-devstack"
	session_timeout = 15  # a dead worker's participant leaves the room 15 s after its last request
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{RTP_PORTS}"
}}
nat: {{
	# no stun_server / turn_server: Janus never contacts anything outside the namespace
	ice_enforce_list = "{NET.ns_if}"
	ignore_mdns = true
}}
plugins: {{
	disable = "{disabled(PLUGINS_DISABLED)}"
}}
transports: {{
	disable = "{disabled(TRANSPORTS_DISABLED)}"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
	disable = "{disabled(EVENTS_DISABLED)}"
}}
""",
        "janus.transport.http.jcfg": f"""general: {{
	json = "indented"
	base_path = "/janus"
	http = true
	port = {PORT}
	ip = "{NET.address}"
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = true
	admin_port = {ADMIN_PORT}
	admin_ip = "{NET.address}"
	admin_https = false
}}
cors: {{
}}
certificates: {{
}}
""",
        "janus.plugin.videoroom.jcfg": f"""general: {{
	admin_key = "{ADMIN_KEY}"	# `create` must carry it
	lock_rtp_forward = true
	string_ids = true	# TRTC room ids and user ids are strings
	events = false
}}
""",
    }

