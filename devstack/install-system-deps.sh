#!/usr/bin/env bash
# Installs the Debian packages the stack, the workers and the tests use; a no-op when all are there.
# janus: the room server (VideoRoom); iproute2: `ip netns` for its network namespace;
# nginx-light + libnginx-mod-rtmp: the RTMP server the pusher's live tests relay from (devstack/rtmp_server.py);
# chromium, xvfb, xauth, pulseaudio(-utils: parec, pactl), a font: the panorama worker's stage (Playwright
# drives Debian's Chromium; no browser download).
set -euo pipefail
packages=(ffmpeg redis-server openssl iproute2 sox janus nginx-light libnginx-mod-rtmp lua5.4
          chromium xvfb xauth pulseaudio pulseaudio-utils fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "[devstack] installing Debian packages: ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
