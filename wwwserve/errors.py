"""One exception hierarchy, each class mapped to one wire error code and one status."""

from __future__ import annotations


class WWWServeError(Exception):
    """Base of every error that crosses the wire; `code` and `status` are what the client sees."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, remote: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.remote = remote  # True when an agent sent it; False when raised on this side

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(WWWServeError):
    """The request cannot be served as sent; the client must change it."""

    code = "bad_request"
    status = 400


class UnknownModel(WWWServeError):
    """No provider reachable from here serves the model that was asked for."""

    code = "unknown_model"
    status = 404


class Overloaded(WWWServeError):
    """Every provider that could serve the request is at its limit; retry later or elsewhere."""

    code = "overloaded"
    status = 503


class DeadlineExceeded(WWWServeError):
    """The request's deadline passed before a full answer was ready."""

    code = "deadline_exceeded"
    status = 504


class BackendError(WWWServeError):
    """The engine behind a provider failed while serving the request."""

    code = "backend_error"
    status = 502


class InternalError(WWWServeError):
    """A bug or an unexpected condition inside wwwserve itself."""

    code = "internal"
    status = 500


ERRORS_BY_CODE: dict[str, type[WWWServeError]] = {
    cls.code: cls
    for cls in (BadRequest, UnknownModel, Overloaded, DeadlineExceeded, BackendError, InternalError)
}


def error_from_wire(code: str, message: str) -> WWWServeError:
    """Rebuild the typed exception a client should raise from an error reply's code."""
    return ERRORS_BY_CODE.get(code, InternalError)(message, remote=True)
