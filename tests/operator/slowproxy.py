"""A TCP proxy in front of the API server that answers slowly on demand.

TLS passes through untouched (the client still verifies the API server's certificate for
127.0.0.1), so the proxy cannot read requests; it holds the *answer* to every request a client
starts while a slow window is open: the request reaches the API server at once, its response
reaches the client `hold` seconds later, past the client's read timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.window_until = 0.0
        self.hold = 0.0
        self.held = 0  # requests whose answer was held
        self.cut_until = 0.0
        self.cut = 0  # requests and connections cut during an outage
        self.connections = 0  # connections forwarded
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def slow_window(self, seconds: float, hold: float) -> None:
        """For the next `seconds`, every request started gets its answer `hold` seconds late."""
        self.hold, self.window_until = hold, time.monotonic() + seconds

    def outage(self, seconds: float) -> None:
        """For the next `seconds` the API server is away for new requests: a connection opened or a
        request sent in that time is cut (a watch already streaming its answer goes on)."""
        self.cut_until = time.monotonic() + seconds

    def close(self) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.cut_until:
                self.cut += 1
                conn.close()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            self.connections += 1
            answer_at = [0.0]  # answers on this connection are not forwarded before this time
            threading.Thread(target=self._requests, args=(conn, up, answer_at), daemon=True).start()
            threading.Thread(target=self._answers, args=(up, conn, answer_at), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, answer_at: list[float]) -> None:
        try:
            while data := src.recv(65536):
                now = time.monotonic()
                if now < self.cut_until:
                    self.cut += 1
                    break  # the request is lost with its connection
                if now < self.window_until and answer_at[0] < now:
                    answer_at[0] = now + self.hold
                    self.held += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _answers(self, src: socket.socket, dst: socket.socket, answer_at: list[float]) -> None:
        try:
            while data := src.recv(65536):
                wait = answer_at[0] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
