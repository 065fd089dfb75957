"""The HTTP adapter (aiohttp): `POST /` is the TC3-signed TRTC API; `/scf/...` are the SCF-style paths."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from capstan.gateway import errors, tc3
from capstan.gateway.service import Gateway, request_id

MAX_BODY = 1 << 20


def answer(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with `Content-Type: application/json` exactly: Tencent's client reads an error envelope only
    under that content type (aiohttp's json_response adds a charset, and the client then sees success)."""
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def app(gateway: Gateway) -> web.Application:
    async def api(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        req = tc3.Request(request.method, request.path, request.query_string, headers, body)
        return answer(await gateway.call_api(req))

    async def scf_path(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, out = await gateway.call_scf(request.match_info["route"], headers, body)
        extra = {"x-scf-reqid": str(out.get("RequestId") or out.get("RequestID") or "")}
        return answer(out, status, extra)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok" if gateway.keys() else "no keys loaded", status=200 if gateway.keys() else 503)

    async def wrong_method(_: web.Request) -> web.Response:
        err = errors.ApiError(errors.INVALID, "the TRTC API is served as POST / with a JSON body")
        return answer(errors.error_envelope(err, request_id()))

    application = web.Application(client_max_size=MAX_BODY)
    application.router.add_post("/", api)
    application.router.add_get("/", wrong_method)
    application.router.add_get("/healthz", healthz)
    application.router.add_post(r"/scf/{route:.+}", scf_path)  # service.scf_route names the routes
    return application
