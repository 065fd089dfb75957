"""Runs the operator with every HTTP request it makes to the API server counted, by verb and
resource (kopf's aiohttp client and the kubernetes client both), dumped as JSON every second.

python -m bench.operator_probe OUT.json [operator args...]
"""

from __future__ import annotations

import collections
import json
import re
import sys
import threading
import time
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()
_PATH = re.compile(r"^/apis?/(?:[^/]+/)?v[0-9a-z]+(?:/namespaces/[^/]+)?/(?P<rest>[^?]*)")


def classify(method: str, url: str) -> str:
    path = re.sub(r"^https?://[^/]+", "", str(url))
    query = path.split("?", 1)[1] if "?" in path else ""
    m = _PATH.match(path)
    rest = m.group("rest").strip("/").split("/") if m else [path.split("?")[0]]
    resource = rest[0] if rest else "?"
    if len(rest) >= 3:
        resource += "/" + rest[2]  # a subresource: status, token
    verb = method.upper()
    if "watch=true" in query or "watch=1" in query:
        verb = "WATCH"
    elif verb == "GET" and len(rest) == 1:
        verb = "LIST"
    return f"{verb} {resource}"


def count(method: str, url: Any) -> None:
    with _LOCK:
        COUNTS[classify(method, str(url))] += 1


def install() -> None:
    import aiohttp
    import kubernetes.client.rest as rest

    original_request = rest.RESTClientObject.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        count(method, url)
        return original_request(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = request  # type: ignore[method-assign]
    original = aiohttp.ClientSession._request

    async def _request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        count(method, str_or_url)
        return await original(self, method, str_or_url, *args, **kwargs)

    aiohttp.ClientSession._request = _request  # type: ignore[method-assign]


def dump_every(path: str, seconds: float = 1.0) -> None:
    def loop() -> None:
        while True:
            with _LOCK:
                data = dict(COUNTS)
            with open(path + ".tmp", "w") as f:
                json.dump(data, f)
            import os
            os.replace(path + ".tmp", path)
            time.sleep(seconds)
    threading.Thread(target=loop, daemon=True, name="request-counts").start()


def main() -> int:
    out, args = sys.argv[1], sys.argv[2:]
    install()
    dump_every(out)
    from capstan.operator.__main__ import main as operator_main

    return operator_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
