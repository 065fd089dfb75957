"""Tencent API Gateway's application authentication, for the SCF-style paths. Pure: no I/O.

The SCF functions of seeds 000/001, 003 and 004 sit behind an API Gateway trigger that checks
    X-Date: <RFC 1123 date>
    Content-MD5: <Base64 MD5 of the body>
    Authorization: hmac id="<key id>", algorithm="hmac-sha256", headers="x-date content-md5",
                   signature="<Base64 HMAC of 'x-date: ...\\ncontent-md5: ...'>"
The key id and secret here are the gateway's SecretId/SecretKey pairs. Capstan requires both
`x-date` and `content-md5` among the signed headers, so the body is covered, and a date within
5 minutes of its clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from email.utils import format_datetime, parsedate_to_datetime

from capstan.gateway import errors
from capstan.gateway.errors import ApiError

MAX_SKEW_SECONDS = 300
REQUIRED_SIGNED = ("x-date", "content-md5")
ALGORITHMS = {"hmac-sha1": hashlib.sha1, "hmac-sha256": hashlib.sha256}
_PART = re.compile(r'(\w+)="([^"]*)"')


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def _signing_string(headers: Mapping[str, str], names: list[str]) -> str:
    return "\n".join(f"{n}: {headers.get(n, '')}" for n in names)


def _mac(algorithm: str, secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), ALGORITHMS[algorithm]).digest()).decode()


def sign(key_id: str, secret: str, body: bytes, now: float, algorithm: str = "hmac-sha256") -> dict[str, str]:
    """The headers a client sends with `body`."""
    import datetime as dt

    headers = {"x-date": format_datetime(dt.datetime.fromtimestamp(now, dt.UTC), usegmt=True),
               "content-md5": content_md5(body)}
    names = list(REQUIRED_SIGNED)
    sig = _mac(algorithm, secret, _signing_string(headers, names))
    return {"X-Date": headers["x-date"], "Content-MD5": headers["content-md5"],
            "Authorization": f'hmac id="{key_id}", algorithm="{algorithm}", headers="{" ".join(names)}", '
                             f'signature="{sig}"'}


def verify(headers: Mapping[str, str], body: bytes, secret_of: Callable[[str], str | None], now: float,
           max_skew: int = MAX_SKEW_SECONDS) -> str:
    """The key id that signed the request; raises ApiError (AuthFailure.*). Header names lower-case."""
    value = headers.get("authorization", "")
    if not value.startswith("hmac "):
        raise ApiError(errors.AUTH_INVALID, 'Authorization must be hmac id="...", algorithm="...", '
                                            'headers="...", signature="..."')
    parts = dict(_PART.findall(value))
    key_id, algorithm, sig = parts.get("id", ""), parts.get("algorithm", ""), parts.get("signature", "")
    names = parts.get("headers", "").lower().split()
    if algorithm not in ALGORITHMS or not key_id or not sig:
        raise ApiError(errors.AUTH_INVALID, "Authorization needs id, algorithm (hmac-sha1 or hmac-sha256) "
                                            "and signature")
    missing = [n for n in REQUIRED_SIGNED if n not in names]
    if missing:
        raise ApiError(errors.AUTH_SIGNATURE, f"the signed headers must include {', '.join(missing)}")
    try:
        date = parsedate_to_datetime(headers.get("x-date", ""))
    except (TypeError, ValueError):
        raise ApiError(errors.AUTH_INVALID, "X-Date is not an RFC 1123 date") from None
    if date.tzinfo is None or abs(now - date.timestamp()) > max_skew:
        raise ApiError(errors.AUTH_EXPIRED, f"X-Date is more than {max_skew} s from the server's time")
    if not hmac.compare_digest(headers.get("content-md5", ""), content_md5(body)):
        raise ApiError(errors.AUTH_SIGNATURE, "Content-MD5 does not match the body")
    secret = secret_of(key_id)
    if secret is None:
        raise ApiError(errors.AUTH_SECRET_ID, "the key id is not known")
    if not hmac.compare_digest(_mac(algorithm, secret, _signing_string(headers, names)), sig):
        raise ApiError(errors.AUTH_SIGNATURE, "the signature does not match: check the secret")
    return key_id
