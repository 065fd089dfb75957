"""TRTC's answer shapes: the `{"Response": {...}}` envelope and its error codes. Pure: no I/O.

Codes are TRTC's (seed 002 names the families: `InvalidParameter.*`, `MissingParameter.*`,
`FailedOperation.RestrictedConcurrency`, `InternalError.*`); the Tencent Cloud client raises
`TencentCloudSDKException(code, message, request_id)` from them. Errors are answered with HTTP 200,
as TRTC does: the client reads the code from the body, and treats any other status as a network error.
"""

from __future__ import annotations

from typing import Any

AUTH_SIGNATURE = "AuthFailure.SignatureFailure"
AUTH_EXPIRED = "AuthFailure.SignatureExpire"
AUTH_INVALID = "AuthFailure.InvalidAuthorization"
AUTH_SECRET_ID = "AuthFailure.SecretIdNotFound"
AUTH_UNAUTHORIZED = "AuthFailure.UnauthorizedOperation"
INVALID = "InvalidParameter"
INVALID_TASK_ID = "InvalidParameter.TaskId"
MISSING = "MissingParameter"
NOT_FOUND = "ResourceNotFound"
RESTRICTED_CONCURRENCY = "FailedOperation.RestrictedConcurrency"
TASK_EXIST = "FailedOperation.TaskExist"
RATE_LIMIT = "RequestLimitExceeded"
UNSUPPORTED_ACTION = "InvalidAction"
UNSUPPORTED_VERSION = "InvalidParameterValue.Version"
INTERNAL = "InternalError"


class ApiError(Exception):
    """An answer other than success: a TRTC error code and a message naming what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message

    @property
    def http_status(self) -> int:
        """The status the plain-HTTP (SCF) paths answer with; the TC3 API always answers 200."""
        if self.code.startswith("AuthFailure"):
            return 401 if self.code != AUTH_UNAUTHORIZED else 403
        if self.code == NOT_FOUND:
            return 404
        if self.code == RATE_LIMIT:
            return 429
        if self.code.startswith(("FailedOperation", "InternalError")):
            return 409 if self.code != INTERNAL else 500
        return 400


def invalid(field: str, why: str) -> ApiError:
    """`InvalidParameter.<Field>` for a value out of range; the message names the whole path."""
    leaf = field.rsplit(".", 1)[-1].split("[", 1)[0]
    return ApiError(f"{INVALID}.{leaf}", f"{field}: {why}")


def unsupported(field: str, why: str) -> ApiError:
    """A TRTC field Capstan cannot honour: refused by name, never silently ignored."""
    return ApiError(INVALID, f"{field} is not supported by Capstan: {why}")


def missing(field: str) -> ApiError:
    leaf = field.rsplit(".", 1)[-1]
    return ApiError(f"{MISSING}.{leaf}", f"{field} is required")


def envelope(body: dict[str, Any], request_id: str) -> dict[str, Any]:
    return {"Response": {**body, "RequestId": request_id}}


def error_envelope(err: ApiError, request_id: str) -> dict[str, Any]:
    return {"Response": {"Error": {"Code": err.code, "Message": err.message}, "RequestId": request_id}}


def scf_error(err: ApiError, request_id: str) -> dict[str, Any]:
    """The SCF functions' error body (seed 003: ErrorCode, ErrorMessage, RequestID)."""
    return {"ErrorCode": err.code, "ErrorMessage": err.message, "RequestID": request_id}
