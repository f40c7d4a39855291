"""The review page's server: a FastAPI app (the framework under LitServe) that serves the page, the recording's
frames and the annotation, and saves the reviewer's corrections.

- `GET /`: the page; `GET /static/...`: its CSS and JS modules, plain files (no node, no build step).
- `GET /api/review`: the annotation: per-second status, model label and confidence, the 1-Hz ground truth on
  the same seconds when the recording has one, the frame times, and the segments (the saved review, else the
  model's).
- `GET /api/frames/{index}`: frame `index` of the recording as a JPEG thumbnail.
- `POST /api/save`: `{"segments": [{"id", "start_ms", "end_ms"}], "edits": [...], "edits_saved": n}`: checked
  (`reviewed_timeline.checked_segments`: 422 naming the field), then written (`ReviewFolder.save`). `edits_saved`
  is the saved edit count the page loaded with: when another page has saved since, 409 and nothing is written
  (the last save does not silently win).

With an API key (the serving setting `api_key`, for a page that listens beyond localhost), every route needs it:
`X-API-Key`, `Authorization: Bearer`, or the cookie that opening `/?key=<key>` once sets, so a browser can use
the page without sending headers itself.
"""

from __future__ import annotations

import hmac
from importlib.resources import files

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.review_folder import ReviewFolder
from vlmchallenge.reviewing.reviewed_timeline import ReviewError, checked_segments

STATIC = files("vlmchallenge.reviewing") / "static"
KEY_COOKIE = "vlmchallenge_review_key"


def _truth_on_seconds(folder: ReviewFolder, footage: Footage) -> list[int | None] | None:
    truth = footage.ground_truth
    if truth is None:
        return None
    by_time = dict(zip(truth.unixtime_ms, truth.op_ids, strict=True))
    return [by_time.get(s.unixtime_ms) for s in folder.seconds]


def review_state(folder: ReviewFolder, footage: Footage) -> dict:
    return {
        "key": f"{folder.user}-{folder.session}",
        "annotation": str(folder.path),
        "model": folder.meta.get("model"),
        "classes": [{"index": c.index, "id": c.id, "name": c.name} for c in OPENPACK_OPERATIONS],
        "first_ms": folder.seconds[0].unixtime_ms,
        "status": [s.status for s in folder.seconds],
        "predicted": [s.op_id for s in folder.seconds],
        "confidence": [s.confidence for s in folder.seconds],
        "truth": _truth_on_seconds(folder, footage),
        "frames_ms": footage.times_ms.tolist(),
        "segments": [{"id": r.op_id, "start_ms": r.start_ms, "end_ms": r.end_ms} for r in folder.segments()],
        "saved": folder.saved,
        "edits_saved": len(folder.edits()),
    }


def _key_check(api_key: str):
    expected = api_key.encode()

    async def check(request: Request, call_next):
        given = request.query_params.get("key")
        if request.url.path == "/" and given and hmac.compare_digest(expected, given.encode()):
            response = RedirectResponse("/", status_code=303)  # the key leaves the address bar and history
            response.set_cookie(KEY_COOKIE, given, httponly=True, samesite="strict")
            return response
        auth = request.headers.get("authorization", "")
        sent = (
            request.headers.get("x-api-key"),
            auth[7:] if auth.lower().startswith("bearer ") else None,
            request.cookies.get(KEY_COOKIE),
        )
        if not any(hmac.compare_digest(expected, (s or "").encode()) for s in sent):
            return JSONResponse(
                {"detail": "missing or wrong API key: open /?key=<key> once"}, status_code=401
            )
        return await call_next(request)

    return check


def review_app(folder: ReviewFolder, footage: Footage, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="vlmchallenge review", docs_url=None, redoc_url=None)
    if api_key:
        app.middleware("http")(_key_check(api_key))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "review.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/api/review")
    def state() -> dict:
        return review_state(folder, footage)

    @app.get("/api/frames/{index}")
    def frame(index: int) -> Response:
        try:
            jpeg = footage.thumbnail(index)
        except IndexError as e:
            raise HTTPException(404, str(e)) from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/save")
    async def save(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError as e:  # a truncated or garbled body is the client's error, not the server's
            raise HTTPException(422, f"body: not JSON ({e})") from None
        if not isinstance(body, dict):
            raise HTTPException(422, 'body: expected {"segments": [...], "edits": [...]}')
        edits = body.get("edits", [])
        try:
            rows = checked_segments(body.get("segments"), folder.span)
            if not isinstance(edits, list) or not all(isinstance(e, dict) for e in edits):
                raise ReviewError("edits: expected a list of objects")
        except ReviewError as e:
            raise HTTPException(422, str(e)) from None
        base, saved = body.get("edits_saved"), len(folder.edits())
        if base is not None and base != saved:  # another page saved since this one loaded: don't overwrite it
            raise HTTPException(
                409, f"saved by another page since this one loaded ({saved} edits, not {base}); reload"
            )
        folder.save(rows, edits)
        return {"saved": True, "segments": len(rows), "edits_saved": len(folder.edits())}

    return app
