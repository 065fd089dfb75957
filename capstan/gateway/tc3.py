"""TC3-HMAC-SHA256: the signature every Tencent Cloud API request carries, verified here. Pure: no I/O.

    Authorization: TC3-HMAC-SHA256 Credential=<SecretId>/<yyyy-mm-dd>/<service>/tc3_request,
                   SignedHeaders=content-type;host, Signature=<hex>

The signature is HMAC-SHA256 over (algorithm, X-TC-Timestamp, credential scope, SHA-256 of the
canonical request), with a key derived from "TC3"+SecretKey, the date and the service. The canonical
request is method, path, query, the signed headers (names and values lower-cased, trimmed), their
names, and the SHA-256 of the body. `sign` is the client's half, used by tests and the docs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from capstan.gateway import errors
from capstan.gateway.errors import ApiError

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "trtc"
MAX_SKEW_SECONDS = 300  # TRTC: a timestamp more than 5 minutes from the server's clock is refused
UNSIGNED = "UNSIGNED-PAYLOAD"
REQUIRED_SIGNED = ("content-type", "host")

_AUTH = re.compile(r"^TC3-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{4}-\d{2}-\d{2})/([a-z0-9]+)/tc3_request,\s*"
                   r"SignedHeaders=([a-z0-9\-;]+),\s*Signature=([0-9a-f]{64})$")


@dataclass(frozen=True)
class Request:
    """What of an HTTP request the signature covers; header names lower-case."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Authorization:
    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    m = _AUTH.match(value.strip())
    if not m:
        raise ApiError(errors.AUTH_INVALID, "Authorization is not a TC3-HMAC-SHA256 authorization")
    secret_id, date, service, signed, signature = m.groups()
    return Authorization(secret_id, date, service, tuple(signed.split(";")), signature)


def canonical_request(req: Request, signed_headers: tuple[str, ...]) -> str:
    payload = UNSIGNED.encode() if req.headers.get("x-tc-content-sha256") == UNSIGNED else req.body
    if req.method.upper() == "GET":
        payload = b""
    headers = "".join(f"{name}:{req.headers.get(name, '').strip().lower()}\n" for name in signed_headers)
    return "\n".join([req.method.upper(), req.path or "/", req.query, headers, ";".join(signed_headers),
                      hashlib.sha256(payload).hexdigest()])


def string_to_sign(timestamp: str, date: str, service: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return "\n".join([ALGORITHM, timestamp, f"{date}/{service}/tc3_request", digest])


def signature(secret_key: str, date: str, service: str, to_sign: str) -> str:
    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def utc_date(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def sign(secret_id: str, secret_key: str, req: Request, timestamp: int, service: str = SERVICE) -> str:
    """The Authorization header a client sends for `req` (whose headers carry content-type and host)."""
    date = utc_date(timestamp)
    canonical = canonical_request(req, REQUIRED_SIGNED)
    sig = signature(secret_key, date, service, string_to_sign(str(timestamp), date, service, canonical))
    return f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, SignedHeaders=content-type;host, " \
           f"Signature={sig}"


def verify(req: Request, secret_key_of: Callable[[str], str | None], now: float,
           max_skew: int = MAX_SKEW_SECONDS, service: str = SERVICE) -> str:
    """The SecretId that signed `req`; raises ApiError (AuthFailure.*) when it is not signed right.

    The body is always covered: an UNSIGNED-PAYLOAD request is refused, since it would let anyone
    who saw one signature send any body with it for five minutes.
    """
    auth = parse_authorization(req.headers.get("authorization", ""))
    stamp = req.headers.get("x-tc-timestamp", "")
    if not stamp.isdigit():
        raise ApiError(errors.MISSING + ".Timestamp", "X-TC-Timestamp is required (Unix seconds)")
    timestamp = int(stamp)
    if abs(now - timestamp) > max_skew:
        raise ApiError(errors.AUTH_EXPIRED, f"X-TC-Timestamp {timestamp} is more than {max_skew} s from the "
                                            f"server's time {int(now)}")
    if auth.service != service:
        raise ApiError(errors.AUTH_INVALID, f"the credential scope names service {auth.service!r}, not {service!r}")
    if auth.date != utc_date(timestamp):
        raise ApiError(errors.AUTH_SIGNATURE, "the credential date is not the UTC date of X-TC-Timestamp")
    missing = [h for h in REQUIRED_SIGNED if h not in auth.signed_headers]
    if missing:
        raise ApiError(errors.AUTH_SIGNATURE, f"SignedHeaders must include {', '.join(missing)}")
    if req.headers.get("x-tc-content-sha256") == UNSIGNED:
        raise ApiError(errors.AUTH_SIGNATURE, "UNSIGNED-PAYLOAD is not accepted: sign the body")
    secret_key = secret_key_of(auth.secret_id)
    if secret_key is None:
        raise ApiError(errors.AUTH_SECRET_ID, "the SecretId is not known")
    canonical = canonical_request(req, auth.signed_headers)
    expected = signature(secret_key, auth.date, auth.service, string_to_sign(stamp, auth.date, auth.service,
                                                                               canonical))
    if not hmac.compare_digest(expected, auth.signature):
        raise ApiError(errors.AUTH_SIGNATURE, "the signature does not match: check the SecretKey")
    return auth.secret_id
