"""The HTTP routes: thin, on one `APIRouter`; the work is in `serving.service`, the bodies in `serving.schemas`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from serving.deps import ServiceDep, SettingsDep
from serving.errors import Invalid
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    HistoryResponse,
    Item,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
)

ERRORS = {404: {"model": Problem, "description": "Unknown item or user"},
          422: {"model": Problem, "description": "Invalid request: the field and the reason"},
          503: {"model": Problem, "description": "A store is unreachable; retry after the Retry-After header"}}

router = APIRouter()


def _json(model: RecommendationResponse | BatchResponse) -> Response:
    """The answer serialized once by pydantic: FastAPI would validate the returned model again against
    `response_model` and encode it through `jsonable_encoder` (about 0.5 ms a request here); the JSON is the same,
    and the route's `response_model` still documents it."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("/v1/recommendations", response_model=RecommendationResponse, responses=ERRORS,
             summary="Recommend the next purchase for one shopper")
async def recommend(body: RecommendationRequest, request: Request, service: ServiceDep) -> Response:
    """A `retrieval` request (about 15 ms of CPU) runs on the event loop: one at a time per worker, first come first
    served. In a thread pool, concurrent requests would share the worker's core and its GIL and all finish late
    (on medium-s0 with 8 clients, 54 ms of server time a request against 15 ms alone); queued, each waits for
    those ahead and then takes its 15 ms. An LLM mode (seconds) goes to the thread pool, so that the loop goes on
    accepting and answering meanwhile."""
    request.state.mode = body.mode
    if body.mode == "retrieval":
        out = service.recommend(body, request.state.request_id)
    else:
        out = await run_in_threadpool(service.recommend, body, request.state.request_id)
    request.state.served = out.mode
    return _json(out)


@router.post("/v1/recommendations:batch", response_model=BatchResponse, responses=ERRORS,
             summary="Recommend for up to 256 shoppers in one call")
def recommend_batch(body: BatchRequest, request: Request, service: ServiceDep, settings: SettingsDep
                    ) -> Response:
    rid = request.state.request_id
    if len(body.requests) > settings.max_batch:
        raise Invalid(f"at most {settings.max_batch} requests", ("body", "requests"))
    return _json(BatchResponse(request_id=rid, responses=[service.recommend(r, f"{rid}/{i}")
                                                          for i, r in enumerate(body.requests)]))


@router.get("/v1/items/{item_id}", response_model=Item, responses=ERRORS, summary="One catalog item")
def item(item_id: Annotated[str, Path(max_length=256)], service: ServiceDep) -> Item:
    return service.item(item_id)


@router.get("/v1/users/{user_id}/history", response_model=HistoryResponse, responses=ERRORS,
            summary="A shopper's actions from the online store, oldest first")
def history(user_id: Annotated[str, Path(max_length=128)], service: ServiceDep) -> HistoryResponse:
    return service.history(user_id)


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Stores reachable and models loaded (503 when not)",
            responses={503: {"description": "A store is unreachable"}})
def readyz(service: ServiceDep, settings: SettingsDep) -> JSONResponse:
    checks = service.readiness()
    return JSONResponse(checks, status_code=200 if checks["ready"] else 503,
                        headers=None if checks["ready"] else {"Retry-After": str(settings.retry_after_s)})
