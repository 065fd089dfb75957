"""The test page of the web-recording tests, served on a loopback address the tests allowlist.

It draws, every animation frame: a background colour that changes each second, a visible frame
counter, and the same counter (1/30 s since the page loaded) as 16 black/white blocks that
:func:`read_counter` decodes from a recorded picture; it plays a WebAudio tone of :data:`TONE_HZ`.
Query options: ``manual=<s>`` calls ``window.startRecord()`` after that many seconds,
``probe=<url>`` fetches that URL every 500 ms (the URL policy must refuse it), ``hang=<s>`` spins
for ever after that many seconds, ``eat=<s>`` allocates memory without end after that many seconds.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any

import numpy as np

TONE_HZ = 660
COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (230, 230, 0)]
BITS = 16
BLOCK = 32  # px, at y = BLOCK_Y
BLOCK_Y = 200
PAGE_HOST = "127.0.0.5"  # the tests allowlist 127.0.0.5/32 only; 127.0.0.1 stays refused

PAGE = """<!doctype html><html><head><meta charset=utf-8><style>html,body{margin:0;height:100%%;overflow:hidden}
canvas{display:block}</style></head><body><canvas id=c></canvas><script>
const q = new URLSearchParams(location.search);
const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;
const g = c.getContext('2d'); const colours = %(colours)s; const t0 = performance.now();
function draw() {
  const ms = performance.now() - t0, n = Math.floor(ms * 30 / 1000), s = Math.floor(ms / 1000);
  const k = colours[s %% colours.length]; g.fillStyle = `rgb(${k[0]},${k[1]},${k[2]})`;
  g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = '#000'; g.fillRect(0, %(by)d - 8, %(bits)d * %(block)d + 16, %(block)d + 16);
  for (let b = 0; b < %(bits)d; b++) { g.fillStyle = (n >> b) & 1 ? '#fff' : '#000';
    g.fillRect(8 + b * %(block)d + 4, %(by)d + 4, %(block)d - 8, %(block)d - 8); }
  g.fillStyle = '#fff'; g.font = '64px sans-serif'; g.fillText('frame ' + n, 40, 120);
  requestAnimationFrame(draw);
}
draw();
const ac = new AudioContext(); const o = ac.createOscillator(); o.frequency.value = %(tone)d;
const gain = ac.createGain(); gain.gain.value = 0.5; o.connect(gain); gain.connect(ac.destination); o.start();
if (q.get('manual')) setTimeout(() => window.startRecord(), parseFloat(q.get('manual')) * 1000);
if (q.get('hang')) setTimeout(() => { for (;;) {} }, parseFloat(q.get('hang')) * 1000);
if (q.get('eat')) { const kept = [];
  setTimeout(function eat() { for (let i = 0; i < 50; i++) kept.push(new Array(1e6).fill(i));
                              setTimeout(eat, 10); }, parseFloat(q.get('eat')) * 1000); }
if (q.get('probe')) setInterval(() => fetch(q.get('probe')).then(() => document.title = 'reached',
                                                                   () => document.title = 'refused'), 500);
</script></body></html>"""


def html() -> bytes:
    return (PAGE % {"colours": [list(c) for c in COLOURS], "bits": BITS, "block": BLOCK, "by": BLOCK_Y,
                    "tone": TONE_HZ}).encode()


class PageServer:
    """The page on http://127.0.0.5:<port>/ (every request logged in :attr:`requests`)."""

    def __init__(self, host: str = PAGE_HOST) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                requests.append(self.path)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("to=", 1)[-1])
                    self.end_headers()
                    return
                body = html()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_counter(rgb: np.ndarray) -> int:
    """The page's counter from a recorded picture (rows x cols x 3)."""
    y = BLOCK_Y + BLOCK // 2
    n = 0
    for b in range(BITS):
        x = 8 + b * BLOCK + BLOCK // 2
        if rgb[y - 3:y + 4, x - 3:x + 4].mean() > 128:
            n |= 1 << b
    return n


def colour_index(rgb: np.ndarray) -> int | None:
    """Which of COLOURS the background (below the blocks) shows; None for none of them."""
    sample = rgb[rgb.shape[0] - 40, rgb.shape[1] // 2].astype(int)
    distances = [int(np.abs(sample - np.array(c)).sum()) for c in COLOURS]
    best = int(np.argmin(distances))
    return best if distances[best] < 90 else None
