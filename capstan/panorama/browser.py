"""Debian's Chromium, driven by Playwright (PyPI's ``playwright``; no browser download: the system
Chromium is the executable), full-screen on the stage's display.

The window is a kiosk window exactly the stage's size: no scrollbars, no infobars, no automation
banner, sound to the stage's PulseAudio, autoplay allowed. Every request goes through the
:class:`~capstan.panorama.guard.EgressGuard` proxy; WebRTC may not send UDP around it, and the
browser's own background traffic (updates, safe browsing, metrics) is switched off.

Playwright's sync API is used from one thread (the session's control loop); its callbacks
(``window.startRecord``, a crash) run while that thread waits inside Playwright.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("capstan.panorama.browser")

CHROMIUM = os.environ.get("CAPSTAN_CHROMIUM", "/usr/bin/chromium")
NAVIGATION_TIMEOUT_SECONDS = 30.0
# One --disable-features switch (Chromium keeps only the last): Playwright's own list and the
# features that would make requests of their own (time, updates, hints, sign-in).
DISABLED_FEATURES = (
    "ImprovedCookieControls", "LazyFrameLoading", "GlobalMediaControls", "DestroyProfileOnBrowserClose", "MediaRouter",
    "DialMediaRouteProvider", "AcceptCHFrame", "AutoExpandDetailsElement", "CertificateTransparencyComponentUpdater",
    "AvoidUnnecessaryBeforeUnloadCheckSync", "Translate", "HttpsUpgrades", "PaintHolding", "LensOverlay",
    "ThirdPartyStoragePartitioning", "PlzDedicatedWorker", "OptimizationHints", "NetworkTimeServiceQuerying",
    "AutofillServerCommunication", "InterestFeedContentSuggestions", "AccountConsistency", "SafeBrowsing",
    "ChromeWhatsNewUI", "PrivacySandboxSettings4", "MediaEngagementBypassAutoplayPolicies",
)


def chromium_args(size: tuple[int, int], proxy_url: str, *, sandbox: bool, js_heap_mb: int = 1024) -> list[str]:
    """Command-line switches of the recording browser (pure)."""
    width, height = size
    args = [
        "--kiosk", "--start-fullscreen", f"--window-size={width},{height}", "--window-position=0,0",
        "--hide-scrollbars", "--disable-infobars", "--noerrdialogs", "--disable-notifications",
        "--autoplay-policy=no-user-gesture-required", "--no-first-run", "--no-default-browser-check",
        "--disable-translate", f"--disable-features={','.join(DISABLED_FEATURES)}",
        "--disable-session-crashed-bubble", "--disable-dev-shm-usage", "--disable-gpu", "--force-device-scale-factor=1",
        # the policy's proxy for every request, loopback included
        f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        # no traffic of the browser's own
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
        "--safebrowsing-disable-auto-update", "--dns-prefetch-disable",
        "--disable-breakpad", "--disable-crash-reporter", "--no-pings", "--disable-default-apps",
        "--disable-extensions", "--disable-field-trial-config", "--allow-browser-signin=false",
        "--variations-server-url=about:blank",
    ]
    # a page that eats memory crashes its renderer (then handled as a crash) instead of the Pod
    args.append(f"--js-flags=--max-old-space-size={js_heap_mb}")
    if not sandbox:  # root (the devstack's pod runner) cannot use Chromium's sandbox
        args.append("--no-sandbox")
    return args


# Playwright adds these; a recording must not be muted nor show "controlled by automated software".
IGNORED_DEFAULT_ARGS = ["--mute-audio", "--enable-automation"]
# --hide-scrollbars works only headless: a window hides them with a style of its own in every document.
NO_SCROLLBARS = """(() => { const add = () => { const s = document.createElement('style');
  s.textContent = '::-webkit-scrollbar { display: none !important; }';
  (document.head || document.documentElement).appendChild(s); };
  if (document.documentElement) add(); else document.addEventListener('DOMContentLoaded', add); })();"""


def sandbox_wanted(env: dict[str, str] | os._Environ[str]) -> bool:
    """Chromium's sandbox, unless running as root (it refuses to) or CAPSTAN_PANORAMA_SANDBOX=0 (a
    container runtime without user namespaces, where the sandbox cannot start)."""
    return os.geteuid() != 0 and env.get("CAPSTAN_PANORAMA_SANDBOX", "1") != "0"


class Browser:
    """One Chromium window showing one page."""

    def __init__(self, profile: Path, size: tuple[int, int], env: dict[str, str], proxy_url: str) -> None:
        self.profile, self.size, self.env, self.proxy_url = profile, size, env, proxy_url
        self._playwright: Any = None
        self.context: Any = None
        self.page: Any = None
        self.crashes = 0
        self.closed_by_page = False
        self.exited = False  # the browser process ended
        self._opening = False
        self.start_called_at: float | None = None
        self._on_start: Callable[[float], None] | None = None

    def open(self, on_start: Callable[[float], None]) -> Browser:
        from playwright.sync_api import sync_playwright

        self._on_start = on_start
        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                str(self.profile), executable_path=CHROMIUM, headless=False, no_viewport=True,
                args=chromium_args(self.size, self.proxy_url, sandbox=sandbox_wanted(os.environ),
                                   js_heap_mb=int(os.environ.get("CAPSTAN_PANORAMA_JS_HEAP_MB", "1024"))),
                ignore_default_args=IGNORED_DEFAULT_ARGS, env={**os.environ, **self.env},
                service_workers="block", accept_downloads=False, timeout=NAVIGATION_TIMEOUT_SECONDS * 1000,
                handle_sigint=False, handle_sigterm=False, handle_sighup=False)
            self.context.add_init_script(NO_SCROLLBARS)
            self.context.expose_function("startRecord", self._start_record)
            self.context.on("page", self._extra_page)
            self.context.on("close", self._exited)
            self._watch(self.context.pages[0] if self.context.pages else self.context.new_page())
        except BaseException:
            self.close()
            raise
        return self

    def _watch(self, page: Any) -> None:
        self.page = page
        page.on("crash", self._crashed)
        page.on("close", self._page_closed)
        page.set_default_navigation_timeout(NAVIGATION_TIMEOUT_SECONDS * 1000)

    def renew_page(self) -> None:
        """A crashed page is dead to Playwright: a new one takes its place in the same window."""
        old = self.page
        self._opening = True
        try:
            page = self.context.new_page()
        finally:
            self._opening = False
        self._watch(page)
        self.closed_by_page = False
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 - it is dead already
            log.info("closing the crashed page: %s", str(exc).splitlines()[0] if str(exc) else exc)
        self.closed_by_page = False

    def _start_record(self, *_: Any) -> bool:
        if self.start_called_at is None:
            self.start_called_at = time.time()
            log.info("the page called window.startRecord()")
            if self._on_start is not None:
                self._on_start(self.start_called_at)
        return True

    def _extra_page(self, page: Any) -> None:
        """Pop-ups would open windows over the recorded one: closed at once."""
        if self.page is not None and page != self.page and not self._opening:
            log.info("closing a pop-up the page opened")
            page.close()

    def _crashed(self, _page: Any) -> None:
        self.crashes += 1
        log.warning("the page's renderer crashed (%d)", self.crashes)

    def _page_closed(self, _page: Any) -> None:
        self.closed_by_page = True

    def _exited(self, _context: Any) -> None:
        self.exited = True

    def goto(self, url: str, timeout: float = NAVIGATION_TIMEOUT_SECONDS) -> tuple[int | None, str]:
        """Open ``url``; the HTTP status of the main document (None for a non-HTTP answer) and the
        URL it came from (after redirects)."""
        response = self.page.goto(url, wait_until="load", timeout=timeout * 1000)
        return (response.status, response.url) if response is not None else (None, url)

    def reload(self) -> None:
        self.page.reload(wait_until="load")

    def wait(self, seconds: float) -> None:
        """Wait, letting Playwright dispatch the page's callbacks meanwhile. A crashed or closed page
        cannot be waited on: the caller sees :attr:`crashes` / :attr:`closed_by_page` / :attr:`exited`."""
        try:
            self.page.wait_for_timeout(max(1.0, seconds * 1000))
        except Exception as exc:  # noqa: BLE001 - Playwright's TargetClosedError and kin
            if not (self.crashes or self.closed_by_page or self.exited):
                log.warning("waiting on the page: %s", str(exc).splitlines()[0] if str(exc) else exc)
            time.sleep(seconds)

    def close(self) -> None:
        try:
            if self.context is not None:
                self.context.close()
        except Exception as exc:  # noqa: BLE001 - a dead browser is being cleaned up
            log.warning("closing the browser: %s", exc)
        finally:
            self.context = None
            if self._playwright is not None:
                try:
                    self._playwright.stop()
                except Exception as exc:  # noqa: BLE001
                    log.warning("stopping Playwright: %s", exc)
                self._playwright = None
