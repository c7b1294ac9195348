"""The recommendation service behind the HTTP app: everything loaded once, one method per endpoint.

`RecommendationService.load(settings)` opens the workdir the asset graph wrote: the catalog, the ID checkpoint, the
title model, the variant ranker, the vector collections (Qdrant Edge, or a server by URL), the Feast online store
(SQLite, or Redis) and, when the workdir has one, the fine-tuned LLM adapter. A request then:
1. reads the user's sequence from the online store through the `prompt_context_v1` FeatureService;
2. picks the category (the request's, else the last clicked/bought item's, else the query memory's first product's);
3. runs `OnlineRetriever` (memory, ID and title searches, mixup, variant re-rank), or, without history and query,
   the category's most bought items;
4. in `llm` mode, generates an item ID and title from the prompt and sends them into mixup as the ID and title
   queries; in `llm-rank` mode, re-ranks the retrieval list's top candidates by the LLM's letter distribution.
   Both run under `llm_timeout_s` and fall back to the retrieval answer past it.

A store that cannot be reached raises `Unavailable` (the app answers 503 with Retry-After); the next request tries
again, so service resumes without a restart when the store returns.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.store import FeatureRepo
from models.catalog import release_ns
from models.common import l2_normalize
from models.llm.prompt import PROMPT_VERSION, Action, PromptConfig, PromptInput, build_prompt, candidate_block
from models.retrieval import RetrievalConfig
from models.text.tokenizer import normalize_text
from serving.bundle import load_ranking_stage
from serving.config import Settings
from serving.recommend import (
    Collections,
    OnlineRetriever,
    Recommendation,
    UserContext,
    cold_items,
    context_from_features,
)
from serving.registry import file_digest
from serving.schemas import (
    Evidence,
    HistoryEvent,
    HistoryResponse,
    Item,
    LLMInfo,
    RecommendationRequest,
    RecommendationResponse,
    clean_query,
)
from serving.vectorstore import StoreUnavailable, VectorStore

logger = logging.getLogger(__name__)
LIST_K = 100  # every request ranks a 100-item list and returns its first k (the evaluation's list length)
ADAPTER_DIR = ("models", "llm_adapter")
TOP_CATEGORIES = "\x00categories"  # the popularity table's key for categories by purchases (not a category name)


class ServiceError(Exception):
    status = 500

    def __init__(self, detail: str | list, loc: tuple[str, ...] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail, self.loc = detail, loc


class Invalid(ServiceError):
    status = 422


class NotFound(ServiceError):
    status = 404


class Unavailable(ServiceError):
    status = 503


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StoreUnavailable, sqlite3.OperationalError, sqlite3.DatabaseError,
                                         ConnectionError, TimeoutError]
    try:
        import redis

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError]
    except ImportError:  # redis is only needed for the Redis online store
        pass
    return tuple(errors)


STORE_ERRORS = _store_errors()


@dataclass
class LLMRuntime:
    """The fine-tuned LLM and what its two modes need; one request at a time (a CPU runs one well)."""

    llm: Any  # models.llm.model.LoadedLLM
    version: str
    id_vector_of: Any
    prompt_cfg: PromptConfig
    gen_cfg: Any
    constrained: bool
    candidates: int
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="llm"))
    busy: threading.Lock = field(default_factory=threading.Lock)
    tries: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """One consistent set of what a request reads: a serving bundle's catalog, models and collections.

    The service swaps the whole world when the registry's pointer moves; requests in flight keep the world they
    started with, and an old world closes once its last request is done.
    """

    root: Path  # the bundle (or the workdir itself before anything is published)
    version: str  # the bundle's version, or "workdir"
    retriever: OnlineRetriever
    store: VectorStore
    id_model: Any
    models: dict[str, str]
    popularity: dict[str, list[str]]
    llm: LLMRuntime | None = None
    llm_error: str | None = None
    refs: int = 0
    retired: bool = False

    def __post_init__(self) -> None:
        from models.llm.prompt import CatalogItems

        items = self.retriever.items
        self.items = items.set_index("item_id", drop=False)
        self.catalog_items = CatalogItems(items)
        self.categories = set(self.items["category"].astype(str))
        self.created_ns = pd.Series(release_ns(items), index=items["item_id"].to_numpy())

    @classmethod
    def load(cls, settings: Settings, root: Path, version: str, workdir: Path,
             llm_cache: dict[str, LLMRuntime] | None = None) -> World:
        """Open a bundle laid out like a workdir: canonical/items.parquet, models/, qdrant/."""
        from models.seqrec import load_checkpoint
        from models.seqrec.vectors import query_vectors
        from models.text import load_title_model
        from models.variants import VariantRanker

        needed = {"catalog": root / "canonical" / "items.parquet",
                  "ID model": root / "models" / f"{settings.id_model}.pt", "title model": root / "models" / "title"}
        if missing := [f"{k} ({p})" for k, p in needed.items() if not p.exists()]:
            raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: run `fashionrec run --workdir {workdir}` "
                                    "first")
        ckpt = load_checkpoint(needed["ID model"])
        ranker_path = root / "models" / "variant_ranker.json"
        ranker = VariantRanker.load(ranker_path) if ranker_path.exists() else None
        items = pd.read_parquet(needed["catalog"])
        encoder = load_title_model(needed["title model"])
        if settings.qdrant_url or version == "workdir":
            store = VectorStore.from_settings(settings)
        else:  # a published bundle holds its own collections
            store = VectorStore.local(root / "qdrant")
        cfg = RetrievalConfig(mode=settings.retrieval_mode, k=LIST_K, n=settings.mixup_n)  # type: ignore[arg-type]
        collections = Collections(settings.id_collection, settings.title_collection, settings.memory_collection)
        stage, stage_version = (load_ranking_stage(root, workdir, items, ckpt, encoder) if settings.ranker_enabled
                                else (None, "off (FASHIONREC_RANKER_ENABLED=0)"))
        retriever = OnlineRetriever(store, items, encoder, lambda h: query_vectors(ckpt.model, ckpt.vocab, h), ranker,
                                    cfg, collections=collections,
                                    shared_id_vector=cold_items(ckpt.vocab, items["item_id"]), ranking=stage)
        models = {"bundle": version, "id_model": f"{settings.id_model}@{file_digest(needed['ID model'])}",
                  "title_model": f"lstm-title@{file_digest(needed['title model'])}",
                  "variant_ranker": f"variant-ranker@{file_digest(ranker_path)}" if ranker else "none",
                  "ranker": stage_version,
                  "vector_engine": store.engine,
                  "online_store": "redis" if settings.online_store.startswith("redis") else "sqlite"}
        world = cls(root, version, retriever, store, ckpt, models, _popularity(workdir, items))
        if settings.llm_enabled:
            world._load_llm(settings, workdir, llm_cache if llm_cache is not None else {})
        return world

    def _load_llm(self, settings: Settings, workdir: Path, cache: dict[str, LLMRuntime]) -> None:
        import json

        from models.llm.generate import GenerateConfig
        from models.llm.model import load_llm, tokenizer_corpus
        from models.llm.train import load_adapter
        from models.seqrec.vectors import trained_id_vectors

        adapter = self.root.joinpath(*ADAPTER_DIR)
        if not (adapter / "llm_meta.json").exists():
            self.llm_error = f"no LLM adapter in {adapter} (materialize the llm group, or run without --no-llm)"
            return
        key = f"{settings.llm_model}:{file_digest(adapter)}"
        if key in cache:  # the same adapter as the world before: keep the loaded model (and its tokenizer)
            self.llm = cache[key]
            self.models["llm"] = self.llm.version
            return
        meta = json.loads((adapter / "llm_meta.json").read_text())
        base_name = settings.llm_model or meta.get("base_model", "smollm2-135m")
        targets_path = workdir / "splits" / "eval_targets.parquet"
        targets = pd.read_parquet(targets_path, columns=["seq_queries"]) if targets_path.exists() else None
        try:
            t0 = time.perf_counter()
            base = load_llm(base_name, corpus=tokenizer_corpus(self.retriever.items, targets))
            tuned = load_adapter(base.model, adapter)
        except (FileNotFoundError, OSError, ValueError, RuntimeError) as e:
            self.llm_error = f"LLM {base_name!r} not loaded: {e}"
            logger.warning(self.llm_error)
            return
        loaded = type(base)(tuned, base.tokenizer, base.name, base.info)
        self.llm = LLMRuntime(
            loaded, f"{base.name}+lora@{file_digest(adapter)}", trained_id_vectors(self.id_model.model, self.id_model.vocab),
            PromptConfig(budget=settings.llm_budget_tokens),
            GenerateConfig(max_new_tokens=settings.llm_max_new_tokens, batch_size=1),
            settings.llm_constrained, settings.llm_candidates)
        cache[key] = self.llm
        self.models["llm"] = self.llm.version
        logger.info("LLM %s loaded in %.1f s", self.llm.version, time.perf_counter() - t0)


class RecommendationService:
    """See the module docstring."""

    def __init__(self, settings: Settings, repo: FeatureRepo, world: World) -> None:
        self.settings, self.repo = settings, repo
        self.workdir = Path(settings.workdir).resolve()
        self._world = world
        self._feast_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._loading = False
        self._llm_cache: dict[str, LLMRuntime] = {}
        if world.llm is not None:
            self._llm_cache[f"{settings.llm_model}:{world.llm.version.rsplit('@', 1)[-1]}"] = world.llm
        self._stamp = self._pointer()
        self._checked = time.monotonic()
        self.swaps = 0

    # -- loading and swapping ---------------------------------------------------------------------------

    @classmethod
    def load(cls, settings: Settings) -> RecommendationService:
        if settings.torch_threads is not None:
            import torch

            torch.set_num_threads(settings.torch_threads)
        root = Path(settings.workdir).resolve()
        if not (root / "feast" / "registry.db").exists():
            raise FileNotFoundError(f"workdir {root} has no Feast registry: run `fashionrec run --workdir {root}` "
                                    "first")
        repo = FeatureRepo(root / "features", root / "feast", online_store=settings.online_store)
        repo.service(settings.feature_service)  # the registry read once, here
        cache: dict[str, LLMRuntime] = {}
        service = cls(settings, repo, cls._open_world(settings, root, cache))
        service._llm_cache.update(cache)
        return service

    @staticmethod
    def _open_world(settings: Settings, workdir: Path, cache: dict[str, LLMRuntime]) -> World:
        from serving.registry import SERVING, Registry

        current = Registry.of(workdir).current(SERVING)
        if current is None:
            return World.load(settings, workdir, "workdir", workdir, cache)
        return World.load(settings, current.path, current.version, workdir, cache)

    def _pointer(self) -> str | None:
        from serving.registry import SERVING, Registry

        return Registry.of(self.workdir).pointer_stamp(SERVING)

    def _maybe_swap(self) -> None:
        """Swap to the registry's current bundle when its pointer moved (checked at most every `swap_check_s`).

        The request that notices loads the new world without holding the lock, so other requests go on with the
        old one meanwhile; the swap itself is one assignment under the lock.
        """
        now = time.monotonic()
        if now - self._checked < self.settings.swap_check_s:
            return
        self._checked = now
        stamp = self._pointer()
        with self._swap_lock:
            if stamp == self._stamp or self._loading:
                return
            self._loading = True
        try:
            new = self._open_world(self.settings, self.workdir, self._llm_cache)
        except Exception:  # noqa: BLE001 - a broken bundle must not stop the service; keep the old one
            logger.exception("could not load serving bundle %s; keeping %s", stamp, self._world.version)
            with self._swap_lock:
                self._stamp, self._loading = stamp, False
            return
        with self._swap_lock:
            old, self._world, self._stamp, self._loading = self._world, new, stamp, False
            self.swaps += 1
            old.retired = True
            close_now = old.refs == 0
        logger.info("swapped serving bundle %s -> %s", old.version, new.version)
        if close_now:
            self._close_world(old)

    def _acquire(self) -> World:
        self._maybe_swap()
        with self._swap_lock:
            w = self._world
            w.refs += 1
            return w

    def _release(self, w: World) -> None:
        with self._swap_lock:
            w.refs -= 1
            done = w.retired and w.refs == 0
        if done:
            self._close_world(w)

    def _close_world(self, w: World) -> None:
        if w.store is not self._world.store:
            w.store.close()

    @property
    def world(self) -> World:
        return self._world

    @property
    def store(self) -> VectorStore:
        return self._world.store

    @property
    def retriever(self) -> OnlineRetriever:
        return self._world.retriever

    @property
    def llm(self) -> LLMRuntime | None:
        return self._world.llm

    def close(self) -> None:
        for rt in {id(r): r for r in self._llm_cache.values()}.values():
            rt.executor.shutdown(wait=False, cancel_futures=True)
        self._world.store.close()

    # -- health -----------------------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Each component's state; `ready` is False when a store cannot be reached."""
        checks: dict[str, Any] = {}
        w = self._acquire()
        try:
            w.store.ping()
            have = set(w.store.collections())
            want = [self.settings.id_collection, self.settings.title_collection, self.settings.memory_collection]
            lacking = [c for c in want if c not in have]
            checks["vector_store"] = f"missing collections {lacking}" if lacking else "ok"
        except Exception as e:  # noqa: BLE001 - readiness reports any failure
            checks["vector_store"] = f"unavailable: {e}"
        try:
            self._online(["__readyz__"])
            checks["online_store"] = "ok"
        except Unavailable as e:
            checks["online_store"] = f"unavailable: {e.detail}"
        finally:
            self._release(w)
        checks["models"] = "ok"
        checks["bundle"] = w.version
        checks["llm"] = w.llm.version if w.llm is not None else f"not loaded ({w.llm_error})"
        checks["ready"] = all(checks[k] == "ok" for k in ("vector_store", "online_store", "models"))
        return checks

    # -- reads ------------------------------------------------------------------------------------------

    def _online(self, user_ids: list[str]) -> dict[str, list]:
        try:
            with self._feast_lock:
                return self.repo.online(user_ids, self.settings.feature_service)
        except STORE_ERRORS as e:
            raise Unavailable(f"online feature store unavailable: {type(e).__name__}: {e}") from e

    def item(self, item_id: str) -> Item:
        w = self._acquire()
        try:
            if item_id not in w.items.index:
                raise NotFound(f"unknown item {item_id!r}")
            return _item(w, item_id)
        finally:
            self._release(w)

    def history(self, user_id: str) -> HistoryResponse:
        w = self._acquire()
        try:
            return self._history(w, user_id)
        finally:
            self._release(w)

    def _history(self, w: World, user_id: str) -> HistoryResponse:
        feats = self._online([user_id])
        actions = (feats.get("seq_actions") or [None])[0]
        if not actions:
            raise NotFound(f"no history for user {user_id!r} in the online store")
        ids = feats["seq_item_ids"][0] or [None] * len(actions)
        queries = feats["seq_queries"][0] or [None] * len(actions)
        stamps = (feats.get("seq_timestamps") or [None])[0] or [None] * len(actions)
        events = []
        for a, i, q, t in zip(actions, ids, queries, stamps, strict=True):
            when = pd.Timestamp(int(t), unit="ms", tz="UTC").isoformat() if t is not None else None
            item = _item(w, str(i)) if i and str(i) in w.items.index else None
            events.append(HistoryEvent(action=str(a), timestamp=when, item=item, query=q or None))
        return HistoryResponse(user_id=user_id, events=events)

    # -- recommendations --------------------------------------------------------------------------------

    def recommend(self, req: RecommendationRequest, request_id: str) -> RecommendationResponse:
        w = self._acquire()
        try:
            return self._recommend(w, req, request_id)
        finally:
            self._release(w)

    def _recommend(self, w: World, req: RecommendationRequest, request_id: str) -> RecommendationResponse:
        t0 = time.perf_counter()
        if req.category is not None and req.category not in w.categories:
            raise Invalid(f"unknown category {req.category!r}; known: {sorted(w.categories)}", ("body", "category"))
        feats = self._online([req.user_id])
        timings = {"features": _ms(t0)}
        actions = _actions(feats)
        history = [a.item_id for a in actions if a.action in ("click", "purchase") and a.item_id
                   and a.item_id in w.items.index]
        searched = [a.query for a in actions if a.action == "search" and a.query and normalize_text(a.query)]
        typed = clean_query(req.query, self.settings.max_query_chars) if req.query else ""
        query = typed if normalize_text(typed) else (searched[-1] if searched else None)
        at = pd.Timestamp.now(tz="UTC").floor("s")  # the request time, to the second (every feature reads it)

        # The category: the request's; else that of what the user types now (its memory's first product), the
        # freshest intent; else that of the last clicked/bought item; else that of their last search.
        category, category_from = req.category, "request"
        if category is None and typed and normalize_text(typed):
            category, category_from = self._query_category(w, typed, at, timings), "query"
        if category is None and history:
            category, category_from = str(w.items.at[history[-1], "category"]), "history"
        if category is None and query is not None:
            category, category_from = self._query_category(w, query, at, timings), "query"
        if category is None:
            category, category_from = w.popularity[TOP_CATEGORIES][0], "popularity"

        seq = context_from_features(feats, category=category, at=at)  # the ranking stage's view of the same sequence
        keep = [j for j, i in enumerate(seq.history) if i in w.items.index]
        ctx = UserContext(category=category, history=[seq.history[j] for j in keep], last_query=query, at=at,
                          history_buy=[seq.history_buy[j] for j in keep], history_ms=[seq.history_ms[j] for j in keep],
                          searches=seq.searches)
        try:
            # The ranking stage also answers a shopper with neither (its popularity source: the category's recent
            # best sellers); without it, or when nothing sold lately, the all-time best sellers below do.
            ranked_stage = w.retriever.ranking is not None
            rec = w.retriever.recommend(ctx) if (history or query or ranked_stage) else Recommendation(items=[])
        except STORE_ERRORS as e:
            raise Unavailable(f"vector store unavailable: {e}") from e
        except KeyError as e:
            raise Unavailable(f"vector store not ready: {e}") from e
        timings |= rec.timings_ms
        answered_from = "history" if history else ("query" if query else "popularity")
        ranked, sources = list(rec.items), {i: rec.source(i) for i in rec.items}
        if not ranked:
            ranked = _popular(w, category, at)
            sources = dict.fromkeys(ranked, "popularity")
            answered_from = "popularity"

        served, fallback, llm_info = "retrieval", None, None
        if req.mode != "retrieval":
            if answered_from == "popularity":
                fallback = "no history and no query: nothing for the LLM to read"
            elif w.llm is None:
                fallback = f"no LLM loaded: {w.llm_error}"
            else:
                budget = self.settings.llm_timeout_s - (time.perf_counter() - t0)
                t = time.perf_counter()
                result, fallback = self._run_llm(w, req, ctx, actions, rec, at, budget)
                timings["llm"] = _ms(t)
                if result is not None:
                    ranked, sources, llm_info = result
                    served = req.mode
        items = [_item(w, i, round(1.0 / (r + 1), 6), sources.get(i)) for r, i in enumerate(ranked[: req.k])]
        timings["total"] = _ms(t0)
        evidence = Evidence(answered_from=answered_from, history_items=history, query_used=query,
                            memory_queries=rec.memory_queries, category_from=category_from)
        return RecommendationResponse(request_id=request_id, user_id=req.user_id, category=category, mode=served,
                                      requested_mode=req.mode, fallback_reason=fallback, items=items,
                                      evidence=evidence, llm=llm_info, models=dict(w.models), timings_ms=timings)

    def _query_category(self, w: World, query: str, at: pd.Timestamp, timings: dict[str, float]) -> str | None:
        """The category of the query memory's first product for a query."""
        t = time.perf_counter()
        key = l2_normalize(w.retriever.encoder.encode([normalize_text(query)]))  # (1, d)
        try:
            _, products = w.retriever._memory(key, at, q=1, v=1)
        except STORE_ERRORS as e:
            raise Unavailable(f"vector store unavailable: {e}") from e
        timings["category"] = timings.get("category", 0.0) + _ms(t)
        return str(w.items.at[products[0], "category"]) if products and products[0] in w.items.index else None

    # -- the LLM modes ------------------------------------------------------------------------------------

    def _run_llm(self, w: World, req: RecommendationRequest, ctx: UserContext, actions: list[Action],
                 rec: Recommendation, at: pd.Timestamp, budget: float) -> tuple[tuple | None, str | None]:
        llm = w.llm
        assert llm is not None
        if budget <= 0:
            return None, f"LLM time budget of {self.settings.llm_timeout_s} s spent before the LLM ran"
        if not llm.busy.acquire(blocking=False):
            return None, "the LLM is busy with an earlier request"
        fn = self._llm_generate if req.mode == "llm" else self._llm_rank

        def job() -> tuple:
            try:
                return fn(w, req, ctx, actions, rec, at)
            finally:
                llm.busy.release()

        future: Future = llm.executor.submit(job)
        try:
            return future.result(timeout=budget), None
        except FutureTimeout:
            return None, f"LLM time budget of {self.settings.llm_timeout_s} s exceeded"
        except STORE_ERRORS as e:
            raise Unavailable(f"vector store unavailable: {e}") from e
        except Exception as e:  # noqa: BLE001 - a model failure serves retrieval, and is logged
            logger.exception("LLM %s failed", req.mode)
            return None, f"LLM failed: {type(e).__name__}: {e}"

    def _prompt_input(self, w: World, ctx: UserContext, actions: list[Action], at: pd.Timestamp, query: str | None
                      ) -> PromptInput:
        acts = list(actions)
        if query and (not acts or acts[-1].query != query):  # the search the user is typing now
            acts.append(Action("search", None, query))
        memory = w.retriever.memory_for([a.query for a in acts if a.action == "search" and a.query], at)
        return PromptInput(tuple(acts), memory, ctx.category)

    def _llm_generate(self, w: World, req: RecommendationRequest, ctx: UserContext, actions: list[Action], rec: Recommendation,
                      at: pd.Timestamp) -> tuple:
        from models.llm.generate import IdTrie, generate
        from models.llm.prompt import parse_answer

        llm = w.llm
        assert llm is not None
        inp = self._prompt_input(w, ctx, actions, at, ctx.last_query)
        text = build_prompt(inp, w.catalog_items, llm.llm.tokenizer, llm.prompt_cfg).text
        tries = None
        if llm.constrained:
            if ctx.category not in llm.tries:
                ids = w.items.index[w.items["category"] == ctx.category].tolist()
                llm.tries[ctx.category] = IdTrie(llm.llm.tokenizer, ids)
            tries = [llm.tries[ctx.category]]
        answer = generate(llm.llm.model, llm.llm.tokenizer, [text], llm.gen_cfg, tries)[0]
        parsed = parse_answer(answer)
        valid = parsed.item_id is not None and parsed.item_id in w.items.index \
            and w.items.at[parsed.item_id, "category"] == ctx.category
        id_vec = llm.id_vector_of([parsed.item_id if valid else None])
        id_vec = None if id_vec is None or np.isnan(id_vec).any() else id_vec[0]
        title_vec = None
        if parsed.title and normalize_text(parsed.title):
            title_vec = l2_normalize(w.retriever.encoder.encode([normalize_text(parsed.title)]))[0]
        out = w.retriever.recommend(ctx, id_vector=id_vec, title_vector=title_vec)
        info = LLMInfo(model=llm.version, prompt_version=PROMPT_VERSION, generated_text=answer,
                       generated_item_id=parsed.item_id, generated_title=parsed.title, well_formed=parsed.well_formed)
        ranked = list(out.items) or list(rec.items)
        return ranked, {i: out.source(i) for i in ranked}, info

    def _llm_rank(self, w: World, req: RecommendationRequest, ctx: UserContext, actions: list[Action], rec: Recommendation,
                  at: pd.Timestamp) -> tuple:
        from models.llm.generate import letter_scores
        from models.llm.prompt import display_order

        llm = w.llm
        assert llm is not None
        cands = list(rec.items[: llm.candidates])
        inp = self._prompt_input(w, ctx, actions, at, ctx.last_query)
        order = display_order(req.user_id, len(cands))
        block = candidate_block([cands[i] for i in order], w.catalog_items, llm.prompt_cfg)
        text = build_prompt(inp, w.catalog_items, llm.llm.tokenizer, llm.prompt_cfg, candidates=block).text
        scores = np.zeros(len(cands))
        if len(cands) > 1:
            scores[order] = letter_scores(llm.llm.model, llm.llm.tokenizer, [text], [len(cands)], 1)[0]
        ranked = [cands[i] for i in np.lexsort((np.arange(len(cands)), -np.round(scores, 9)))] + rec.items[len(cands):]
        info = LLMInfo(model=llm.version, prompt_version=PROMPT_VERSION, candidates=cands)
        return ranked, {i: rec.source(i) for i in ranked}, info


def _item(w: World, item_id: str, score: float | None = None, source: str | None = None) -> Item:
    row = w.items.loc[item_id]

    def text(key: str) -> str | None:
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    return Item(item_id=item_id, title=text("title") or "", brand=text("brand"), color=text("color"),
                size=text("size"), category=str(row["category"]), score=score, source=source)



def _popular(w: World, category: str, at: pd.Timestamp) -> list[str]:
    """The category's most bought items, released by `at`."""
    return [i for i in w.popularity.get(category, []) if w.created_ns.get(i, 0) <= at.value][:LIST_K]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)


def _actions(feats: dict[str, list]) -> list[Action]:
    """The user's actions, oldest first, from `prompt_context_v1` online features (empty for an unknown user)."""
    acts = (feats.get("seq_actions") or [None])[0] or []
    ids = (feats.get("seq_item_ids") or [None])[0] or [None] * len(acts)
    queries = (feats.get("seq_queries") or [None])[0] or [None] * len(acts)
    return [Action(str(a), str(i) if i else None, str(q) if q else None)
            for a, i, q in zip(acts, ids, queries, strict=True)]


def _popularity(root: Path, items: pd.DataFrame) -> dict[str, list[str]]:
    """Per category, items by purchase count (then clicks, then id); `TOP_CATEGORIES` lists categories by purchases."""
    path = root / "canonical" / "events.parquet"
    counts = pd.Series(0.0, index=items["item_id"].to_numpy())
    if path.exists():
        ev = pd.read_parquet(path, columns=["action", "item_id"])
        ev = ev[ev["item_id"].notna()]
        weight = np.where(ev["action"].to_numpy() == "purchase", 1.0, 1e-3)  # clicks break purchase ties
        counts = counts.add(pd.Series(weight, index=ev["item_id"].to_numpy()).groupby(level=0).sum(), fill_value=0)
    df = items[["item_id", "category"]].assign(n=counts.reindex(items["item_id"].to_numpy()).fillna(0).to_numpy())
    df = df.sort_values(["n", "item_id"], ascending=[False, True], kind="stable")
    out = {str(c): g["item_id"].head(LIST_K * 2).astype(str).tolist() for c, g in df.groupby("category", sort=True)}
    out[TOP_CATEGORIES] = df.groupby("category")["n"].sum().sort_values(ascending=False, kind="stable").index.astype(str).tolist()
    return out
