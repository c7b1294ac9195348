"""The HTTP service: `fashionrec serve --workdir W`, or `uvicorn serving.app:create_app --factory`.

The routes (`serving.routes`, one `APIRouter`, `Depends` aliases in `serving.deps`) stay thin: the work is in
`serving.service.RecommendationService`, loaded once in the lifespan hook; the bodies are in `serving.schemas`. The
service's errors carry no HTTP codes; `STATUS` maps them here, in one place. Every response carries an `X-Request-ID` (the caller's, when it sends a sane one),
and the service logs one JSON line per request. Errors: 422 names the field and the reason, 404 an unknown item or
user, 503 an unreachable store (with Retry-After; the next request tries again), 500 anything else, without
crashing the worker.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.config import Settings
from serving.errors import Invalid, NotFound, ServiceError, Unavailable
from serving.routes import router
from serving.service import RecommendationService

access_log = logging.getLogger("fashionrec.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
STATUS: dict[type[ServiceError], int] = {Invalid: 422, NotFound: 404, Unavailable: 503}  # else 500


def create_app(settings: Settings | None = None, service: RecommendationService | None = None) -> FastAPI:
    """The app over `settings.workdir` (read from FASHIONREC_* when not given), or over a loaded `service`."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or RecommendationService.load(settings)
        app.state.service, app.state.settings = svc, settings
        if service is None:  # (a forked worker's app, given its service, was warmed before it served)
            await warm_http(app)
        try:
            yield
        finally:
            if service is None:
                svc.close()

    app = FastAPI(title="fashionrec", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Next-purchase recommendations for fashion e-commerce (Sequential LLM framework)",
                  description="Reads the shopper's sequence from the Feast online store, the query memory and the "
                              "ID/title collections from Qdrant, and answers with catalog items.")

    app.add_middleware(RequestContext, log_requests=settings.log_requests)

    def problem(request: Request, status: int, detail: str | list, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail, "request_id": getattr(request.state, "request_id", None)},
                            status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return problem(request, 422, errors)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
        if status == 422 and exc.loc:
            return problem(request, 422, [{"loc": list(exc.loc), "msg": exc.detail, "type": "value_error"}])
        headers = {"Retry-After": str(settings.retry_after_s)} if isinstance(exc, Unavailable) else None
        return problem(request, status, exc.detail, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger(__name__).exception("unhandled error")
        return problem(request, 500, f"internal error: {type(exc).__name__}")

    app.include_router(router)
    offline_docs(app)
    return app


class RequestContext:
    """Every request's id (the caller's `X-Request-ID` when sane, else a new one) in `request.state.request_id` and
    in the response's header; one JSON access-log line per request; and a 500 with the id, never a crashed worker,
    for an error nothing else handled. A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` cost about a
    millisecond per request here."""

    def __init__(self, app: ASGIApp, log_requests: bool = True) -> None:
        self.app, self.log_requests = app, log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        t0, status, started = time.perf_counter(), [500], [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - never let a request take the worker down
            logging.getLogger(__name__).exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started[0]:
                await JSONResponse({"detail": "internal error", "request_id": rid}, status_code=500,
                                   headers={"X-Request-ID": rid})(scope, receive, send)
        if self.log_requests:
            access_log.info(json.dumps({
                "request_id": rid, "method": scope.get("method"), "path": scope.get("path"), "status": status[0],
                "ms": round((time.perf_counter() - t0) * 1e3, 2), "mode": state.get("mode"),
                "served": state.get("served")}))


DOCS_ASSETS = "/docs-assets"


def offline_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from the assets in the installed `fastapi-offline` wheel, not a CDN: the
    pages render on a machine without internet. Only its static files are used."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    openapi, redirect = app.openapi_url or "/openapi.json", app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{openapi}", title=f"{app.title} - API",
                                   oauth2_redirect_url=redirect, swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @app.get(redirect, include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{openapi}", title=f"{app.title} - API",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


async def warm_http(app: FastAPI) -> float:
    """One request through the whole app in process (the middleware, routing, validation and serialization, whose
    first call builds what later calls reuse), before the server accepts its first connection: without it the
    first shopper's request takes about twice the median. Needs `app.state.service`; the milliseconds it took."""
    import time

    import httpx

    from serving.service import WARM_UP_USER

    service = app.state.service
    b = service.bundle
    category = sorted(b.categories)[0]
    top = b.popularity.get(category, [])
    body = {"user_id": WARM_UP_USER, "k": 10, "category": category,
            "query": str(b.items.at[top[0], "title"]) if top else category}
    t = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://warm-up") as client:
        r = await client.post("/v1/recommendations", json=body)
    if r.status_code != 200:  # a store that is down: /readyz reports it and retries the warm-up
        logging.getLogger(__name__).warning("HTTP warm-up answered %d: %s", r.status_code, r.text[:200])
    return (time.perf_counter() - t) * 1e3
