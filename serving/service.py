"""The recommendation service behind the HTTP app: the current bundle, the online store, one method per endpoint.

`RecommendationService.load(settings)` opens the Feast online store (SQLite, or Redis) and the registry's current
serving bundle (`serving.bundle.open_bundle`; the workdir itself before anything is published). A request then:
1. reads the user's sequence from the online store through the `prompt_context_v1` FeatureService;
2. picks the category (the request's, else the typed query's memory's first product's, else the last clicked or
   bought item's, else the last search's);
3. runs `OnlineRetriever` (memory, ID and title searches, then the ranking stage, or mixup + variants), or, with
   nothing to rank, the category's all-time best sellers;
4. in the `llm` and `llm-rank` modes, asks the LLM (`serving.llm_runtime`) within `llm_timeout_s`, and keeps the
   retrieval answer past it.

The bundle is swapped when the registry's `current` pointer moves (checked at most every `swap_check_s`), without
blocking requests. A store that cannot be reached raises `Unavailable`; the next request tries again.

Every bundle is warmed before it serves (`warm_up`): one request per category, a typed query (the title of the
category's best seller) from a user the online store does not know, through the whole path (online read, memory,
ID and title searches, the ranking stage). `/readyz` is not ready until that has run; when a store is down at
start, `readiness` retries it, so the service becomes ready without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from feature_repo.layout import Layout
from feature_repo.sequences import UserSequence
from models.llm.prompt import Action
from models.text.tokenizer import normalize_text
from serving.bundle import TOP_CATEGORIES, Bundle, open_current
from serving.config import Settings
from serving.errors import STORE_ERRORS, Invalid, NotFound, Unavailable
from serving.llm_runtime import LLMRuntime, generate_and_retrieve, rank_candidates, run_with_budget
from serving.recommend import Recommendation, UserContext, context_from_features
from serving.registry import SERVING, Registry
from serving.schemas import (
    Evidence,
    HistoryEvent,
    HistoryResponse,
    Item,
    RecommendationRequest,
    RecommendationResponse,
    clean_query,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureRepo

logger = logging.getLogger(__name__)
WARM_UP_USER = "__warm-up__"  # a user id no shop issues (the online store has no row for it)


class RecommendationService:
    """See the module docstring."""

    def __init__(self, settings: Settings, repo: FeatureRepo, bundle: Bundle,
                 llm_cache: dict[str, LLMRuntime] | None = None) -> None:
        self.settings, self.repo = settings, repo
        self.workdir = Path(settings.workdir).resolve()
        self.registry = Registry(Layout(self.workdir).registry)
        self._bundle = bundle
        self._feast_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._loading = False
        self._llm_cache: dict[str, LLMRuntime] = dict(llm_cache or {})
        self._stamp = self.registry.pointer_stamp(SERVING)
        self._checked = time.monotonic()
        self.swaps = 0
        # Under `serve --workers N` (`serving.prefork`): one shared flag per worker, set once it has warmed up
        self.worker_flags: Sequence[int] | None = None

    # -- loading and swapping ---------------------------------------------------------------------------

    @classmethod
    def load(cls, settings: Settings, warm: bool = True) -> RecommendationService:
        if settings.torch_threads is not None:  # per request, one core each: torch's and BLAS's thread pools
            import torch
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(settings.torch_threads)
            threadpool_limits(settings.torch_threads, user_api="blas")
        layout = Layout(Path(settings.workdir).resolve())
        if not (layout.feast / "registry.db").exists():
            raise FileNotFoundError(f"workdir {layout.root} has no Feast registry: run `fashionrec run --workdir "
                                    f"{layout.root}` first")
        cache: dict[str, LLMRuntime] = {}
        service = cls(settings, _open_repo(settings), open_current(settings, cache), cache)
        if warm:
            service.warm_up(service._bundle)
        return service

    @classmethod
    def preload(cls, settings: Settings) -> RecommendationService:
        """What `serving.prefork` loads once before it forks the workers: the current bundle without its LLM, with
        its ranker compiled when the compiled code is cached (or `ranker_compile` is "wait"), warmed up; then the
        vector store and the online store are let go (`detach`), for each worker to open its own (`attach`)."""
        from models.ranker.compiled import is_cached
        from serving.bundle import compile_ranker_for

        here = settings.model_copy(update={"workers": 1, "llm_enabled": False, "ranker_compile": "off"})
        service = cls.load(here, warm=False)
        service.settings = settings
        b = service._bundle
        if b.ranking_model is not None and (settings.ranker_compile == "wait" or (
                settings.ranker_compile == "background" and is_cached(b.ranking_model.boosters))):
            compile_ranker_for(b, "wait")  # once, here: every worker shares the compiled code
        service.warm_up(b)
        service.detach()
        return service

    def detach(self) -> None:
        """Before a fork: close the bundle's vector store (an Edge shard opens in one process at a time) and drop
        the online store's connections (a connection does not cross a fork)."""
        self._bundle.store.close()
        self.repo = None  # type: ignore[assignment]

    def attach(self) -> None:
        """In a forked worker: its own vector store and online store, fresh locks, its LLM (in the background), and
        the ranker compiled in the background where the parent did not compile it."""
        from serving.bundle import compile_ranker_for, start_llm

        self._feast_lock, self._swap_lock = threading.Lock(), threading.Lock()  # a lock held at the fork stays held
        b = self._bundle
        if b.reads_no_collection:
            # Everything a request reads from the collections is in the tables the parent loaded: this worker
            # opens no copy of the shards (333 MB and 1.5 s each on medium-s0); its store stays closed.
            b.collections_in_memory = True
        else:
            b.reopen_store(self.settings)
        self.repo = _open_repo(self.settings)
        if self.settings.llm_enabled:
            start_llm(b, self.settings, self._llm_cache)
        compile_ranker_for(b, self.settings.ranker_compile)

    def warm_up(self, b: Bundle, categories: int | None = None) -> bool:
        """Run the request path once per category (up to `categories`, by default `settings.warm_up_categories`) on
        bundle `b`, so that the lazy parts (the query encoder's first forward, the vector segments, the boosters'
        first predict) are paid here and not by the first shopper. Sets `b.warm_ms`; False (and logged) when a
        store is down."""
        n = self.settings.warm_up_categories if categories is None else categories
        if n == 0:
            b.warm_ms = 0.0
            return True
        t0, at = time.perf_counter(), pd.Timestamp.now(tz="UTC")
        try:
            for cat in sorted(b.categories)[:n]:
                top = b.popular(cat, at) or b.popularity.get(cat, [])
                query = str(b.items.at[top[0], "title"]) if top else cat
                self._recommend(b, RecommendationRequest(user_id=WARM_UP_USER, query=query, category=cat), "warm-up")
                if top:  # and a shopper with a history (the ID model's sequence encoder, the history features)
                    hist, ms = top[:3][::-1], int(at.value // 1_000_000) - 3_600_000
                    b.retriever.recommend(UserContext(category=cat, history=hist, last_query=query, at=at,
                                                      history_buy=[False] * len(hist), history_ms=[ms] * len(hist)))
        except (*STORE_ERRORS, Unavailable) as e:  # the request path wraps store errors; the direct call does not
            logger.warning("warm-up of bundle %s failed (%s); /readyz retries it", b.version, e)
            return False
        b.warm_ms = _ms(t0)
        logger.info("warmed bundle %s in %.0f ms", b.version, b.warm_ms)
        return True

    def _maybe_swap(self) -> None:
        """Swap to the registry's current bundle when its pointer moved (checked at most every `swap_check_s`).

        The request that notices opens the new bundle without holding the lock, so other requests go on with the
        old one meanwhile; the swap itself is one assignment under the lock.
        """
        now = time.monotonic()
        if now - self._checked < self.settings.swap_check_s:
            return
        self._checked = now
        stamp = self.registry.pointer_stamp(SERVING)
        with self._swap_lock:
            if stamp == self._stamp or self._loading:
                return
            self._loading = True
        try:
            new = open_current(self.settings, self._llm_cache)
            self.warm_up(new)  # before it serves; a failed warm-up does not block the swap (readiness retries it)
        except Exception:  # noqa: BLE001 - a broken bundle must not stop the service; keep the old one
            logger.exception("could not open serving bundle %s; keeping %s", stamp, self._bundle.version)
            with self._swap_lock:
                self._stamp, self._loading = stamp, False
            return
        with self._swap_lock:
            old, self._bundle, self._stamp, self._loading = self._bundle, new, stamp, False
            self.swaps += 1
            old.retired = True
            close_now = old.refs == 0
        logger.info("swapped serving bundle %s -> %s", old.version, new.version)
        if close_now:
            self._close(old)

    def _acquire(self) -> Bundle:
        self._maybe_swap()
        with self._swap_lock:
            b = self._bundle
            b.refs += 1
            return b

    def _release(self, b: Bundle) -> None:
        with self._swap_lock:
            b.refs -= 1
            done = b.retired and b.refs == 0
        if done:
            self._close(b)

    def _close(self, b: Bundle) -> None:
        if b.store is not self._bundle.store:
            b.close()

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def close(self) -> None:
        for rt in {id(r): r for r in self._llm_cache.values()}.values():
            rt.close()
        self._bundle.close()

    # -- health -----------------------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Each component's state; `ready` is False when a store cannot be reached."""
        checks: dict[str, Any] = {}
        b = self._acquire()
        try:
            if b.collections_in_memory:
                checks["vector_store"] = "ok"  # its tables were read at load: nothing to reach
            else:
                b.store.ping()
                have = set(b.store.collections())
                lacking = [c for c in self.settings.collections.names() if c not in have]
                checks["vector_store"] = f"missing collections {lacking}" if lacking else "ok"
        except Exception as e:  # noqa: BLE001 - readiness reports any failure
            checks["vector_store"] = f"unavailable: {e}"
        try:
            self._online(["__readyz__"])
            checks["online_store"] = "ok"
        except Unavailable as e:
            checks["online_store"] = f"unavailable: {e.detail}"
        finally:
            self._release(b)
        checks["models"] = "ok"
        if b.warm_ms is None and checks["online_store"] == checks["vector_store"] == "ok":
            self.warm_up(b)  # a store was down when the bundle opened
        checks["warm_up"] = "ok" if b.warm_ms is not None else "not yet"
        checks["warm_up_ms"] = b.warm_ms
        checks["bundle"] = b.version
        checks["ranker_engine"] = b.ranker_engine  # not part of `ready`: LightGBM serves the same scores meanwhile
        checks["llm"] = b.llm_status()  # not part of `ready`: retrieval is served while the LLM loads
        if self.worker_flags is not None:  # under `serve --workers N`: every worker warmed up once
            warmed = sum(self.worker_flags)
            checks["workers"] = "ok" if warmed == len(self.worker_flags) else f"{warmed}/{len(self.worker_flags)} warmed up"
        checks["ready"] = all(checks.get(k, "ok") == "ok"
                              for k in ("vector_store", "online_store", "models", "warm_up", "workers"))
        return checks

    # -- reads ------------------------------------------------------------------------------------------

    def _online(self, user_ids: list[str]) -> dict[str, list]:
        try:
            with self._feast_lock:
                return self.repo.online(user_ids, self.settings.feature_service)
        except STORE_ERRORS as e:
            raise Unavailable(f"online feature store unavailable: {type(e).__name__}: {e}") from e

    def item(self, item_id: str) -> Item:
        b = self._acquire()
        try:
            if item_id not in b.items.index:
                raise NotFound(f"unknown item {item_id!r}")
            return _item(b, item_id)
        finally:
            self._release(b)

    def history(self, user_id: str) -> HistoryResponse:
        b = self._acquire()
        try:
            seq = UserSequence.from_features(self._online([user_id]))
            if not len(seq):
                raise NotFound(f"no history for user {user_id!r} in the online store")
            events = [HistoryEvent(action=a, timestamp=pd.Timestamp(t, unit="ms", tz="UTC").isoformat(),
                                   item=_item(b, i) if i and i in b.items.index else None, query=q)
                      for a, i, q, t in zip(seq.actions, seq.item_ids, seq.queries, seq.timestamps_ms, strict=True)]
            return HistoryResponse(user_id=user_id, events=events)
        finally:
            self._release(b)

    # -- recommendations --------------------------------------------------------------------------------

    def recommend(self, req: RecommendationRequest, request_id: str) -> RecommendationResponse:
        b = self._acquire()
        try:
            return self._recommend(b, req, request_id)
        finally:
            self._release(b)

    def _recommend(self, b: Bundle, req: RecommendationRequest, request_id: str) -> RecommendationResponse:
        t0 = time.perf_counter()
        if req.category is not None and req.category not in b.categories:
            raise Invalid(f"unknown category {req.category!r}; known: {sorted(b.categories)}", ("body", "category"))
        feats = self._online([req.user_id])
        timings = {"features": _ms(t0)}
        seq = UserSequence.from_features(feats)
        actions = [Action(a, i, q) for a, i, q in zip(seq.actions, seq.item_ids, seq.queries, strict=True)]
        history = [i for i in seq.items() if i in b.items.index]
        typed = clean_query(req.query, self.settings.max_query_chars) if req.query else ""
        query = typed if normalize_text(typed) else seq.last_query()
        at = pd.Timestamp.now(tz="UTC").floor("s")  # the request time, to the second (every feature reads it)

        # The category: the request's; else that of what the user types now (its memory's first product), the
        # freshest intent; else that of the last clicked/bought item; else that of their last search.
        category, category_from = req.category, "request"
        if category is None and typed and normalize_text(typed):
            category, category_from = self._query_category(b, typed, at, timings), "query"
        if category is None and history:
            category, category_from = str(b.items.at[history[-1], "category"]), "history"
        if category is None and query is not None:
            category, category_from = self._query_category(b, query, at, timings), "query"
        if category is None:
            category, category_from = b.popularity[TOP_CATEGORIES][0], "popularity"

        full = context_from_features(feats, category=category, at=at)  # the ranking stage's view of the sequence
        keep = [j for j, i in enumerate(full.history) if i in b.items.index]
        ctx = UserContext(category=category, history=[full.history[j] for j in keep], last_query=query, at=at,
                          history_buy=[full.history_buy[j] for j in keep],
                          history_ms=[full.history_ms[j] for j in keep], searches=full.searches)
        try:
            # The ranking stage also answers a shopper with neither (its popularity source: the category's recent
            # best sellers); without it, or when nothing sold lately, the all-time best sellers below do.
            ranked_stage = b.retriever.ranking is not None
            rec = b.retriever.recommend(ctx) if (history or query or ranked_stage) else Recommendation(items=[])
        except STORE_ERRORS as e:
            raise Unavailable(f"vector store unavailable: {e}") from e
        except KeyError as e:
            raise Unavailable(f"vector store not ready: {e}") from e
        timings |= rec.timings_ms
        answered_from = "history" if history else ("query" if query else "popularity")
        ranked, sources = list(rec.items), {i: rec.source(i) for i in rec.items}
        if not ranked:
            ranked = b.popular(category, at)
            sources = dict.fromkeys(ranked, "popularity")
            answered_from = "popularity"

        served, fallback, llm_info = "retrieval", None, None
        if req.mode != "retrieval":
            if answered_from == "popularity":
                fallback = "no history and no query: nothing for the LLM to read"
            elif b.llm is None:
                fallback = f"no LLM loaded: {b.llm_error}"
            else:
                runtime = b.llm
                if req.mode == "llm":
                    def job() -> tuple:
                        return generate_and_retrieve(runtime, b, ctx, actions, rec, at, typed or None)
                else:
                    def job() -> tuple:
                        return rank_candidates(runtime, b, req.user_id, ctx, actions, rec, at, typed or None)
                t = time.perf_counter()
                limit = self.settings.llm_timeout_s
                result, fallback = run_with_budget(runtime, job, limit - (t - t0), limit, req.mode)
                timings["llm"] = _ms(t)
                if result is not None:
                    ranked, sources, llm_info = result
                    served = req.mode
        items = [_item(b, i, round(1.0 / (r + 1), 6), sources.get(i)) for r, i in enumerate(ranked[: req.k])]
        timings["total"] = _ms(t0)
        evidence = Evidence(answered_from=answered_from, history_items=history, query_used=query,
                            memory_queries=rec.memory_queries, category_from=category_from)
        return RecommendationResponse(request_id=request_id, user_id=req.user_id, category=category, mode=served,
                                      requested_mode=req.mode, fallback_reason=fallback, items=items,
                                      evidence=evidence, llm=llm_info, models=dict(b.models), timings_ms=timings)

    def _query_category(self, b: Bundle, query: str, at: pd.Timestamp, timings: dict[str, float]) -> str | None:
        """The category of the query memory's first product for a query."""
        t = time.perf_counter()
        key = b.retriever.query_key(normalize_text(query))  # (1, d)
        try:
            _, products = b.retriever._memory(key, at, q=1, v=1)
        except STORE_ERRORS as e:
            raise Unavailable(f"vector store unavailable: {e}") from e
        timings["category"] = timings.get("category", 0.0) + _ms(t)
        return str(b.items.at[products[0], "category"]) if products and products[0] in b.items.index else None


def _open_repo(settings: Settings) -> FeatureRepo:
    from feature_repo.store import FeatureRepo  # Feast: 3.5 s of import, paid when a service opens its store

    """The Feast online store of the settings' workdir, its feature service read once."""
    layout = Layout(Path(settings.workdir).resolve())
    repo = FeatureRepo(layout.features, layout.feast, online_store=settings.online_store)
    repo.service(settings.feature_service)
    return repo


def _item(b: Bundle, item_id: str, score: float | None = None, source: str | None = None) -> Item:
    row, f = b.retriever.row_of[item_id], b.item_fields

    def text(key: str) -> str | None:
        v = f[key][row]
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    return Item(item_id=item_id, title=text("title") or "", brand=text("brand"), color=text("color"),
                size=text("size"), category=str(f["category"][row]), score=score, source=source)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)
