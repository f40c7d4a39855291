"""The one error body of every 4xx/5xx answer: `{"detail": "<what was wrong and the remedy>"}`, plus, for a
request the schema rejects, `"errors": [{"loc": [...], "msg": ..., "type": ...}]` (docs/serving.md §5).

FastAPI answers its own request validation with `{"detail": [<error objects>]}` while `HTTPException` (ours,
LitServe's 401/413/500, Starlette's 404/405) answers `{"detail": "<text>"}`: two shapes under one key. So the
validation handler is replaced to give the same text `detail`, keeping the structured errors beside it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request, e.g. ['body', 'clips', 0, 'frames']")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'missing', 'extra_forbidden'")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong and what to do about it")
    errors: list[FieldError] | None = Field(
        None, description="for a request the schema rejects: one entry per violated field"
    )


def field_errors(exc: RequestValidationError) -> list[FieldError]:
    # pydantic's `input` and `ctx` are left out: `input` would echo a (possibly huge) upload back
    return [FieldError(loc=list(e["loc"]), msg=e["msg"], type=e["type"]) for e in exc.errors()]


def describe(errors: list[FieldError]) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for e in errors)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = field_errors(exc)
    log.warning("rejected a request (422): %s", describe(errors))
    body = ErrorResponse(detail=describe(errors), errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def use_one_error_shape(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
