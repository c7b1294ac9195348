"""The HTTP service: `fashionrec serve --workdir W`, or `uvicorn serving.app:create_app --factory`.

Routes stay thin: the work is in `serving.service.RecommendationService`, loaded once in the lifespan hook; the
bodies are in `serving.schemas`. Every response carries an `X-Request-ID` (the caller's, when it sends a sane one),
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
from typing import Annotated

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.config import Settings
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    HistoryResponse,
    Item,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
)
from serving.service import Invalid, RecommendationService, ServiceError, Unavailable

access_log = logging.getLogger("fashionrec.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ERRORS = {404: {"model": Problem, "description": "Unknown item or user"},
          422: {"model": Problem, "description": "Invalid request: the field and the reason"},
          503: {"model": Problem, "description": "A store is unreachable; retry after the Retry-After header"}}


def create_app(settings: Settings | None = None, service: RecommendationService | None = None) -> FastAPI:
    """The app over `settings.workdir` (read from FASHIONREC_* when not given), or over a loaded `service`."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or RecommendationService.load(settings)
        app.state.service = svc
        try:
            yield
        finally:
            if service is None:
                svc.close()

    app = FastAPI(title="fashionrec", version="1", lifespan=lifespan,
                  summary="Next-purchase recommendations for fashion e-commerce (Sequential LLM framework)",
                  description="Reads the shopper's sequence from the Feast online store, the query memory and the "
                              "ID/title collections from Qdrant, and answers with catalog items.")

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # noqa: ANN001, ANN202
        sent = request.headers.get("x-request-id", "")
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        request.state.request_id = rid
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - never let a request take the worker down
            logging.getLogger(__name__).exception("unhandled error in %s %s", request.method, request.url.path)
            response = JSONResponse({"detail": "internal error", "request_id": rid}, status_code=500)
        response.headers["X-Request-ID"] = rid
        if settings.log_requests:
            access_log.info(json.dumps({
                "request_id": rid, "method": request.method, "path": request.url.path,
                "status": response.status_code, "ms": round((time.perf_counter() - t0) * 1e3, 2),
                "mode": getattr(request.state, "mode", None), "served": getattr(request.state, "served", None)}))
        return response

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
        if exc.status == 422 and exc.loc:
            return problem(request, 422, [{"loc": list(exc.loc), "msg": exc.detail, "type": "value_error"}])
        headers = {"Retry-After": str(settings.retry_after_s)} if isinstance(exc, Unavailable) else None
        return problem(request, exc.status, exc.detail, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger(__name__).exception("unhandled error")
        return problem(request, 500, f"internal error: {type(exc).__name__}")

    def svc(request: Request) -> RecommendationService:
        return request.app.state.service

    @app.post("/v1/recommendations", response_model=RecommendationResponse, responses=ERRORS,
              summary="Recommend the next purchase for one shopper")
    def recommend(body: RecommendationRequest, request: Request) -> RecommendationResponse:
        request.state.mode = body.mode
        out = svc(request).recommend(body, request.state.request_id)
        request.state.served = out.mode
        return out

    @app.post("/v1/recommendations:batch", response_model=BatchResponse, responses=ERRORS,
              summary="Recommend for up to 256 shoppers in one call")
    def recommend_batch(body: BatchRequest, request: Request) -> BatchResponse:
        rid = request.state.request_id
        if len(body.requests) > settings.max_batch:
            raise Invalid(f"at most {settings.max_batch} requests", ("body", "requests"))
        out = [svc(request).recommend(r, f"{rid}/{i}") for i, r in enumerate(body.requests)]
        return BatchResponse(request_id=rid, responses=out)

    @app.get("/v1/items/{item_id}", response_model=Item, responses=ERRORS, summary="One catalog item")
    def item(item_id: Annotated[str, Path(max_length=256)], request: Request) -> Item:
        return svc(request).item(item_id)

    @app.get("/v1/users/{user_id}/history", response_model=HistoryResponse, responses=ERRORS,
             summary="A shopper's actions from the online store, oldest first")
    def history(user_id: Annotated[str, Path(max_length=128)], request: Request) -> HistoryResponse:
        return svc(request).history(user_id)

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Stores reachable and models loaded (503 when not)",
             responses={503: {"description": "A store is unreachable"}})
    def readyz(request: Request) -> JSONResponse:
        checks = svc(request).readiness()
        return JSONResponse(checks, status_code=200 if checks["ready"] else 503,
                            headers=None if checks["ready"] else {"Retry-After": str(settings.retry_after_s)})

    return app
