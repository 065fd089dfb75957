"""Run the TRTC-compatible gateway: python -m capstan.gateway --config FILE --keys-secret NS/NAME.

Environment equivalents: CAPSTAN_GATEWAY_CONFIG, CAPSTAN_GATEWAY_KEYS_SECRET, CAPSTAN_GATEWAY_PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capstan-gateway", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("CAPSTAN_GATEWAY_CONFIG", ""),
                        help="YAML config file (apps, storage, rateLimit)")
    parser.add_argument("--keys-secret", default=os.environ.get("CAPSTAN_GATEWAY_KEYS_SECRET", ""),
                        help="namespace/name of the Secret holding the SecretId/SecretKey pairs")
    parser.add_argument("--host", default=os.environ.get("CAPSTAN_GATEWAY_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CAPSTAN_GATEWAY_PORT", "8090")))
    parser.add_argument("--keys-refresh-seconds", type=float,
                        default=float(os.environ.get("CAPSTAN_GATEWAY_KEYS_REFRESH_SECONDS", "10")),
                        help="how often the keys Secret is read again (added and revoked keys take effect)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.config or "/" not in args.keys_secret:
        parser.error("--config and --keys-secret NAMESPACE/NAME are required")
    asyncio.run(serve(Path(args.config), args.keys_secret, args.host, args.port, args.keys_refresh_seconds))
    return 0


async def serve(config_path: Path, keys_secret: str, host: str, port: int, refresh: float = 10.0) -> None:
    from aiohttp import web

    from capstan.gateway import http, kube
    from capstan.gateway.config import parse_config
    from capstan.gateway.service import Gateway

    cfg = parse_config(config_path.read_text())
    store = kube.KubeStore(kube.api_client())
    namespace, name = keys_secret.split("/", 1)
    keys = kube.KeysFromSecret(store, namespace, name, refresh)
    await keys.refresh()
    refresher = asyncio.create_task(keys.run())
    runner = web.AppRunner(http.app(Gateway(cfg, keys, store)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sys.stdout.write(f"capstan gateway listening on {host}:{port} with {len(keys())} keys\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        refresher.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
