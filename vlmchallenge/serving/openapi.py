"""An OpenAPI schema that tells the truth about the server (docs/serving.md §5), so clients generated from it
work and `schemathesis run --checks all` finds nothing.

FastAPI derives the schema from the routes, but LitServe registers its routes itself (`/`, `/health`, `/info`,
the predict routes, the OpenAI spec's) without declaring what they answer: no error statuses, a
`{"detail": [...]}` 422 model that our errors do not follow, `application/json` for the plain-text `/` and
`/health` (which sent no `Content-Type` at all), and no trace of the configured limits. So after LitServe has
built the app: `/` and `/health` answer `text/plain`, and `app.openapi` is wrapped to declare every status a
route can answer with the one error body (`serving/errors.py`), and the limits as `maxItems`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from vlmchallenge.serving.errors import ErrorResponse
from vlmchallenge.serving.settings import ServeLimits

ERROR_STATUSES = {  # what every POST route may answer besides 200, and why
    "400": "the body cannot be parsed at all (e.g. not UTF-8)",
    "401": "missing or wrong API key (only when the server has `api_key`)",
    "413": "the request body is over `max_payload_mb`",
    "422": "the request is not what the schema or the limits allow; `detail` names the field",
    "500": "a fault in the server (a bug: never expected)",
    "503": "busy: `max_queue` requests are in the server; retry after `Retry-After` seconds",
    "504": "not answered within `timeout` seconds",
}
RETRY_AFTER = {"required": True, "schema": {"type": "integer", "minimum": 0}, "description": "seconds"}
IN_SERVER = {
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
    "description": "POST requests in the server now (queued or running), the count compared with max_queue",
}
BATCH_SIZE = {
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "description": "requests answered by the same forward pass as this one (dynamic batching)",
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def error_response(why: str) -> dict:
    return {"description": why, "content": {"application/json": {"schema": ERROR_REF}}}


def answer_plain_text(app: FastAPI, path: str) -> None:
    """Re-register LitServe's `GET path` (which returns a bare `Response`, no `Content-Type`) as `text/plain`,
    same handler, same auth dependency."""
    route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == path)
    original = route.endpoint

    async def endpoint(request: Request) -> PlainTextResponse:
        answer = await original(request)
        return PlainTextResponse(answer.body.decode(), status_code=answer.status_code)

    app.router.routes.remove(route)
    app.add_api_route(
        path,
        endpoint,
        methods=["GET"],
        dependencies=route.dependencies,
        response_class=PlainTextResponse,
        name=route.name,
        summary=route.summary or route.name.capitalize(),
    )


def limit_items(schemas: dict, limits: ServeLimits) -> None:
    """The configured limits, which the server checks after validation, as schema constraints."""
    for model, field, most in (
        ("ClipIn", "frames", limits.max_frames_per_clip),
        ("PredictRequest", "frames", limits.max_frames_per_clip),
        ("PredictRequest", "clips", limits.max_clips_per_request),
        ("AnnotateRequest", "frames", limits.max_recording_frames),
        ("AnnotateRequest", "timestamps_ms", limits.max_recording_frames),
    ):
        if model in schemas:
            schemas[model]["properties"][field]["maxItems"] = most
    chat = schemas.get("ChatCompletionRequest")
    if chat:  # what ChatClassifierAPI.authorize enforces on top of LitServe's model
        chat["properties"]["n"] = {"type": "integer", "minimum": 1, "maximum": limits.max_clips_per_request}
        chat["properties"]["messages"]["minItems"] = 1


def declare_responses(path: str, method: str, operation: dict) -> None:
    responses = operation["responses"]
    if method == "options":  # LitServe's CORS preflight answer: 200, empty body
        operation["responses"] = {"200": {"description": "empty body"}}
        return
    if path in ("/", "/health"):
        responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
        if path == "/health":
            responses["503"] = {
                "description": "the inference workers are not ready yet",
                "content": {"text/plain": {"schema": {"type": "string", "const": "not ready"}}},
            }
    if path == "/info":
        responses["200"]["content"]["application/json"]["schema"] = {"type": "object"}
    if path == "/predict":
        responses["200"]["headers"] = {"X-Batch-Size": BATCH_SIZE}
    if path == "/v1/chat/completions":
        responses["200"]["content"] = {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionResponse"}},
            "text/event-stream": {"schema": {"type": "string"}, "description": "with `stream: true`"},
        }
    statuses = ERROR_STATUSES if method == "post" else {"401": ERROR_STATUSES["401"]}
    for status, why in statuses.items():
        responses[status] = error_response(why)
    if method == "post":
        responses["503"]["headers"] = {"Retry-After": RETRY_AFTER}
    else:
        for answer in responses.values():
            answer["headers"] = {"X-Requests-In-Server": IN_SERVER}


def truthful_openapi(app: FastAPI, limits: ServeLimits, title: str, version: str):
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=title, version=version, routes=app.routes)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        _, defs = models_json_schema(
            [(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}"
        )
        schemas.update(defs["$defs"])
        from litserve.specs.openai import ChatCompletionResponse

        if "/v1/chat/completions" in schema["paths"]:
            _, chat = models_json_schema(
                [(ChatCompletionResponse, "serialization")], ref_template="#/components/schemas/{model}"
            )
            schemas.update(chat["$defs"])
        limit_items(schemas, limits)
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                declare_responses(path, method, operation)
        app.openapi_schema = schema
        return schema

    return openapi


def tell_the_truth(app: FastAPI, limits: ServeLimits, title: str, version: str) -> None:
    for path in ("/", "/health"):
        answer_plain_text(app, path)
    app.openapi = truthful_openapi(app, limits, title, version)
