"""TC3-HMAC-SHA256 and API Gateway app-auth verification, checked against the requests Tencent's own
client builds (tencentcloud-sdk-python-common). No I/O: the client's request is built, never sent."""

from __future__ import annotations

import json

import pytest
from tencentcloud.common import credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import trtc_client

from capstan.gateway import appauth, errors, tc3
from capstan.gateway.errors import ApiError

SECRET_ID, SECRET_KEY = "AKIDgatewaytest0001", "gateway-test-secret-key-0001"


def sdk_request(params: dict, secret_key: str = SECRET_KEY, action: str = "DescribeCloudRecording") -> tc3.Request:
    """What TrtcClient would send for `action`, as the gateway sees it."""
    profile = ClientProfile(httpProfile=HttpProfile(endpoint="127.0.0.1:8090", protocol="http"))
    client = trtc_client.TrtcClient(credential.Credential(SECRET_ID, secret_key), "", profile)
    req = RequestInternal("127.0.0.1:8090", "POST", "/")
    client._build_req_with_tc3_signature(action, params, req)
    headers = {k.lower(): v for k, v in req.header.items()}
    return tc3.Request("POST", "/", "", headers, req.data.encode())


def keys(secret_id: str) -> str | None:
    return SECRET_KEY if secret_id == SECRET_ID else None


def test_the_tencent_clients_signature_verifies() -> None:
    req = sdk_request({"SdkAppId": 1400000000, "TaskId": "x"})
    assert tc3.verify(req, keys, now=float(req.headers["x-tc-timestamp"])) == SECRET_ID
    assert req.headers["x-tc-action"] == "DescribeCloudRecording" and req.headers["x-tc-version"] == "2019-07-22"


def test_our_signer_matches_the_tencent_client() -> None:
    req = sdk_request({"SdkAppId": 1})
    ours = tc3.sign(SECRET_ID, SECRET_KEY, req, int(req.headers["x-tc-timestamp"]))
    assert ours == req.headers["authorization"]


def test_wrong_secret_key_is_a_signature_failure() -> None:
    req = sdk_request({"SdkAppId": 1}, secret_key="not-the-right-key-000")
    with pytest.raises(ApiError) as err:
        tc3.verify(req, keys, now=float(req.headers["x-tc-timestamp"]))
    assert err.value.code == errors.AUTH_SIGNATURE


def test_a_changed_body_is_a_signature_failure() -> None:
    req = sdk_request({"SdkAppId": 1, "TaskId": "a"})
    tampered = tc3.Request(req.method, req.path, req.query, req.headers,
                           json.dumps({"SdkAppId": 1, "TaskId": "b"}).encode())
    with pytest.raises(ApiError) as err:
        tc3.verify(tampered, keys, now=float(req.headers["x-tc-timestamp"]))
    assert err.value.code == errors.AUTH_SIGNATURE


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_a_timestamp_more_than_five_minutes_off_is_refused(skew: int) -> None:
    req = sdk_request({"SdkAppId": 1})
    with pytest.raises(ApiError) as err:
        tc3.verify(req, keys, now=float(req.headers["x-tc-timestamp"]) + skew)
    assert err.value.code == errors.AUTH_EXPIRED


def test_within_five_minutes_is_accepted() -> None:
    req = sdk_request({"SdkAppId": 1})
    assert tc3.verify(req, keys, now=float(req.headers["x-tc-timestamp"]) + 299) == SECRET_ID


def test_unknown_secret_id_unsigned_payload_and_malformed_header() -> None:
    req = sdk_request({"SdkAppId": 1})
    now = float(req.headers["x-tc-timestamp"])
    with pytest.raises(ApiError) as err:
        tc3.verify(req, lambda _sid: None, now=now)
    assert err.value.code == errors.AUTH_SECRET_ID
    unsigned = tc3.Request("POST", "/", "", {**req.headers, "x-tc-content-sha256": "UNSIGNED-PAYLOAD"}, req.body)
    with pytest.raises(ApiError) as err:
        tc3.verify(unsigned, keys, now=now)
    assert err.value.code == errors.AUTH_SIGNATURE and "UNSIGNED-PAYLOAD" in err.value.message
    bad = tc3.Request("POST", "/", "", {**req.headers, "authorization": "Basic abc"}, req.body)
    with pytest.raises(ApiError) as err:
        tc3.verify(bad, keys, now=now)
    assert err.value.code == errors.AUTH_INVALID


def test_app_auth_signs_date_and_body() -> None:
    body = json.dumps({"SdkAppId": 1}).encode()
    headers = {k.lower(): v for k, v in appauth.sign(SECRET_ID, SECRET_KEY, body, now=1_700_000_000).items()}
    assert appauth.verify(headers, body, keys, now=1_700_000_100) == SECRET_ID
    with pytest.raises(ApiError) as err:
        appauth.verify(headers, body + b" ", keys, now=1_700_000_100)
    assert err.value.code == errors.AUTH_SIGNATURE and "Content-MD5" in err.value.message
    with pytest.raises(ApiError) as err:
        appauth.verify(headers, body, keys, now=1_700_000_400)
    assert err.value.code == errors.AUTH_EXPIRED
    wrong = {k.lower(): v for k, v in appauth.sign(SECRET_ID, "another-secret-key-0000", body, 1_700_000_000).items()}
    with pytest.raises(ApiError) as err:
        appauth.verify(wrong, body, keys, now=1_700_000_000)
    assert err.value.code == errors.AUTH_SIGNATURE
