"""Every error Switchgear raises, each knowing the HTTP status and OpenAI error type it leaves with.

    SwitchgearError                      500 api_error
    ├── InvalidRequest                   400 invalid_request_error
    │   ├── ContextWindowExceeded        400 invalid_request_error / context_length_exceeded
    │   ├── BodyTooLarge                 413 invalid_request_error
    │   ├── HeadersTooLarge              431 invalid_request_error
    │   └── UnsupportedMediaType         415 invalid_request_error
    ├── AuthenticationFailed             401 invalid_request_error / invalid_api_key
    ├── PermissionDenied                 403 permission_error
    ├── NotFound                         404 invalid_request_error
    │   ├── ModelNotFound                404 invalid_request_error / model_not_found
    │   └── PromptNotFound               404 invalid_request_error (param prompt.id)
    ├── MethodNotAllowed                 405 invalid_request_error
    ├── RateLimited                      429 rate_limit_error (Retry-After)
    ├── Overloaded                       503 api_error (Retry-After)
    └── UpstreamError                    502 api_error        a model server failed us
        ├── UpstreamConnectError         503 api_error        could not reach it   (retryable)
        ├── UpstreamTimeout              504 api_error        no answer in time    (retryable before bytes)
        ├── UpstreamStatusError          upstream's status    it answered with an error
        └── UpstreamProtocolError        502 api_error        it broke the protocol (reset, bad JSON,
                                                              a stream cut in the middle)

Foreign errors (aiohttp, llama.cpp, database drivers) are mapped to this tree once, where they are
caught: in the backend or store that called the foreign library. Anything else that escapes a
request is an internal error and leaves as a 500 without its message (which may hold secrets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Upstream HTTP statuses worth another attempt on another deployment.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class SwitchgearError(Exception):
    """Base of the tree: an error that leaves the gateway in OpenAI's shape."""

    status = 500
    type = "api_error"
    code: str | None = None
    retryable = False
    #: Extra response headers the error leaves with (e.g. ``x-ratelimit-*`` on a 429).
    headers: Sequence[tuple[bytes, bytes]] = ()

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's SDKs expect: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @property
    def kind(self) -> str:
        """A short stable name for records and metrics (the class name)."""
        return type(self).__name__


class InvalidRequest(SwitchgearError):
    """The request body or its headers are wrong; the client must change them."""

    status = 400
    type = "invalid_request_error"


class ContextWindowExceeded(InvalidRequest):
    """The prompt plus the requested output does not fit the model's context window."""

    code = "context_length_exceeded"


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    status = 413


class HeadersTooLarge(InvalidRequest):
    """The request headers together are larger than the configured limit."""

    status = 431


class UnsupportedMediaType(InvalidRequest):
    """The request body is not JSON."""

    status = 415


class AuthenticationFailed(SwitchgearError):
    """No API key, or one that is unknown, revoked or expired."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(SwitchgearError):
    """The key is valid but its role or scopes do not allow this."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(SwitchgearError):
    """No such path."""

    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    """The requested model alias is not configured."""

    code = "model_not_found"


class PromptNotFound(NotFound):
    """The prompt template a request names is not in the serving config (OpenAI answers an
    unknown prompt id with a 404 and no code)."""


class MethodNotAllowed(SwitchgearError):
    """The path exists but not for this HTTP method."""

    status = 405
    type = "invalid_request_error"


class RateLimited(SwitchgearError):
    """Too many requests; try again after ``retry_after`` seconds."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class Overloaded(SwitchgearError):
    """No deployment can take the request now; try again after ``retry_after`` seconds."""

    status = 503
    type = "api_error"
    code = "overloaded"
    retryable = True


class UpstreamError(SwitchgearError):
    """A model server failed to answer properly."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamConnectError(UpstreamError):
    """The model server could not be reached (refused, reset before a response, DNS)."""

    status = 503
    code = "upstream_unreachable"
    retryable = True


class UpstreamTimeout(UpstreamError):
    """The model server did not answer within the deployment's timeout."""

    status = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamStatusError(UpstreamError):
    """The model server answered with an HTTP error; its status and message are passed on."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        upstream_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.status = status
        self.retryable = status in RETRYABLE_STATUSES
        if upstream_type:
            self.type = upstream_type
        elif status < 500:
            self.type = "invalid_request_error" if status != 429 else "rate_limit_error"


class UpstreamProtocolError(UpstreamError):
    """The model server broke the protocol: reset mid-response, unreadable body, cut stream."""

    retryable = True


def internal_error() -> SwitchgearError:
    """The error an unexpected exception becomes; its text is never shown to the client."""
    return SwitchgearError("The server had an error while processing your request.")
