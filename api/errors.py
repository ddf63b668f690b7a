"""HTTP errors with stable codes, and the handlers that render every error in one shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mqchat.errors import Conflict, DirectoryError, Forbidden, NotFound, StorageUnavailable


class ApiError(Exception):
    """An error meant for the client: ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None,
                 missing: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        """Sent as ``Retry-After`` (429, 503)."""
        self.missing = missing
        """For 403 ``forbidden``: the permission the caller lacks (sent as ``error.missing``)."""
        super().__init__(message)


def error_body(code: str, message: str, missing: str | None = None) -> dict[str, dict[str, str]]:
    """``{"error": {"code", "message"}}``, plus ``missing`` (a permission name) on a 403 ``forbidden``
    for a server permission."""
    body = {"code": code, "message": message}
    if missing is not None:
        body["missing"] = missing
    return {"error": body}


_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "rate_limited", 500: "internal", 503: "unavailable",
}


#: HTTP status of each :class:`~mqchat.errors.DirectoryError` code (docs/http.md lists them).
DIRECTORY_STATUS = {
    "forbidden": 403, "role_hierarchy": 403, "banned": 403,
    "owner_cannot_leave": 409, "server_channel": 409, "channel_full": 409, "server_full": 409,
    "user_channels_full": 409, "user_servers_full": 409,
    "too_many_roles": 409, "too_many_channels": 409, "too_many_overwrites": 409,
    "invite_expired": 410, "invite_used_up": 410, "invite_revoked": 410,
    "unknown_permission": 422, "invalid": 422, "not_server_channel": 422,
}


def directory_error(exc: DirectoryError) -> ApiError:
    """The one translation of a refused directory request into an HTTP error.

    ``not_found`` becomes ``<kind>_not_found`` (``server_not_found``, ``role_not_found``, ...) with 404;
    ``forbidden`` names the missing permission in its message; an unknown code is a 400.
    """
    if isinstance(exc, NotFound):
        return ApiError(404, f"{exc.kind}_not_found", f"no such {exc.kind} {exc.object_id!r}, or you may not see it")
    if isinstance(exc, Forbidden):
        message = exc.message if exc.permission in exc.message else f"{exc.message} (missing {exc.permission})"
        return ApiError(403, "forbidden", message, missing=exc.permission)
    return ApiError(DIRECTORY_STATUS.get(exc.code, 400), exc.code, exc.message)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse(error_body(exc.code, exc.message, exc.missing), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(DirectoryError)
    async def _directory(request: Request, exc: DirectoryError) -> JSONResponse:
        return await _api_error(request, directory_error(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(error_body("conflict", str(exc)), status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                # loc is ("body", <character offset>): say what it is instead of "1: JSON decode error"
                offset = next((p for p in err.get("loc", ()) if isinstance(p, int)), None)
                where = f" at character {offset}" if offset is not None else ""
                return JSONResponse(error_body("invalid_request", f"the body is not valid JSON{where}"),
                                    status_code=422)
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(error_body("invalid_request", "; ".join(parts)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(StorageUnavailable)
    async def _unavailable(_: Request, exc: StorageUnavailable) -> JSONResponse:
        return JSONResponse(error_body("unavailable", "storage is temporarily unavailable; retry"),
                            status_code=503, headers={"Retry-After": str(max(1, round(exc.retry_after)))})
