"""The fine-tuned LLM at request time: loading a bundle's adapter, and the two LLM modes of a request.

- `llm` (the paper's path): the model generates an item ID and a title from the prompt; they become the ID and
  title queries of the retrieval (`OnlineRetriever.recommend(id_vector=, title_vector=)`).
- `llm-rank`: the retrieval list's first candidates are shown as lettered options, and one forward pass orders them
  by the model's letter distribution (the display order is `display_order`, as in the evaluation).

One LLM call runs at a time (a CPU runs one well), in its own thread, under the request's time budget; past the
budget, while busy, or on a model failure the request keeps its retrieval answer and says why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.layout import Layout
from models.common import l2_normalize
from models.llm.prompt import (
    PROMPT_VERSION,
    Action,
    PromptConfig,
    PromptInput,
    build_prompt,
    candidate_block,
    display_order,
)
from models.text.tokenizer import normalize_text
from serving.config import Settings
from serving.errors import STORE_ERRORS, Unavailable
from serving.recommend import OnlineRetriever, Recommendation, UserContext
from serving.registry import file_digest
from serving.schemas import LLMInfo

logger = logging.getLogger(__name__)
CORPUS_FILE = "tokenizer_corpus.json"  # beside the adapter: the text the tiny model's tokenizer was trained on


@dataclass
class LLMRuntime:
    """The fine-tuned LLM and what its two modes need; one request at a time."""

    llm: Any  # models.llm.model.LoadedLLM (torch: the reference, and constrained decoding)
    engine: Any  # models.llm.engine.Engine: what the modes run on
    version: str
    id_vector_of: Callable[[list[str | None]], np.ndarray]
    prompt_cfg: PromptConfig
    gen_cfg: Any  # models.llm.generate.GenerateConfig
    constrained: bool
    candidates: int
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="llm"))
    busy: threading.Lock = field(default_factory=threading.Lock)
    tries: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def adapter_key(settings: Settings, layout: Layout, adapter_digest: str | None = None) -> str:
    """What identifies a loaded LLM: the base model setting, the adapter's content (`adapter_digest` when already
    hashed), and the engine (its setting and the conversion's metadata, which names the adapter it was built from)."""
    from models.llm.engine import ENGINE_META

    meta = layout.llm_engine / ENGINE_META
    converted = file_digest(meta) if meta.exists() else "-"
    return f"{settings.llm_model}:{adapter_digest or file_digest(layout.llm_adapter)}:{settings.llm_engine}:{converted}"


def load_llm_runtime(settings: Settings, layout: Layout, id_model: Any, cache: dict[str, LLMRuntime]
                     ) -> tuple[LLMRuntime | None, str | None]:
    """The bundle's LLM (from `cache` when the same adapter is loaded already), or None and why not."""
    from models.llm.engine import TorchEngine, engine_key, open_engine
    from models.llm.generate import GenerateConfig
    from models.llm.model import load_llm
    from models.llm.train import load_adapter
    from models.seqrec.vectors import trained_id_vectors

    adapter = layout.llm_adapter
    if not (adapter / "llm_meta.json").exists():
        return None, f"no LLM adapter in {adapter} (materialize the llm group, or run without --no-llm)"
    digest = file_digest(adapter)
    key = adapter_key(settings, layout, digest)
    if key in cache:  # the same adapter as the bundle before: keep the loaded model (and its tokenizer)
        return cache[key], None
    meta = json.loads((adapter / "llm_meta.json").read_text())
    if meta.get("prompt_version") != PROMPT_VERSION:
        logger.warning("the adapter in %s was trained on %s prompts and is now read with %s ones: retrain it "
                       "(materialize the llm group)", adapter, meta.get("prompt_version"), PROMPT_VERSION)
    base_name = settings.llm_model or meta.get("base_model", "smollm2-135m")
    corpus_path = adapter / CORPUS_FILE
    corpus = json.loads(corpus_path.read_text()) if corpus_path.exists() else None
    try:
        t0 = time.perf_counter()
        base = load_llm(base_name, corpus=corpus)
        tuned = load_adapter(base.model, adapter)
    except (FileNotFoundError, OSError, ValueError, RuntimeError) as e:
        error = f"LLM {base_name!r} not loaded: {e}"
        logger.warning(error)
        return None, error
    engine, note = open_engine(settings.llm_engine, layout.llm_engine, engine_key(base.name, digest),
                               TorchEngine(tuned, base.tokenizer))
    if note:
        logger.warning(note)
    runtime = LLMRuntime(
        type(base)(tuned, base.tokenizer, base.name, base.info), engine,
        f"{base.name}+lora@{digest} on {engine.name}",
        trained_id_vectors(id_model.model, id_model.vocab), PromptConfig(budget=settings.llm_budget_tokens),
        GenerateConfig(max_new_tokens=settings.llm_max_new_tokens, batch_size=1), settings.llm_constrained,
        settings.llm_candidates)
    cache[key] = runtime
    logger.info("LLM %s loaded in %.1f s", runtime.version, time.perf_counter() - t0)
    return runtime, None


def run_with_budget(runtime: LLMRuntime, job: Callable[[], tuple], budget: float, limit_s: float, what: str
                    ) -> tuple[tuple | None, str | None]:
    """Run one LLM job within `budget` seconds (what is left of the request's `limit_s`): its result, or None and
    the reason it fell back."""
    if budget <= 0:
        return None, f"LLM time budget of {limit_s} s spent before the LLM ran"
    if not runtime.busy.acquire(blocking=False):
        return None, "the LLM is busy with an earlier request"

    def guarded() -> tuple:
        try:
            return job()
        finally:
            runtime.busy.release()

    future: Future = runtime.executor.submit(guarded)
    try:
        return future.result(timeout=budget), None
    except FutureTimeout:
        return None, f"LLM time budget of {limit_s} s exceeded"
    except STORE_ERRORS as e:
        raise Unavailable(f"vector store unavailable: {e}") from e
    except Exception as e:  # noqa: BLE001 - a model failure serves retrieval, and is logged
        logger.exception("LLM %s failed", what)
        return None, f"LLM failed: {type(e).__name__}: {e}"


def prompt_input(retriever: OnlineRetriever, ctx: UserContext, actions: list[Action], at: pd.Timestamp,
                 query: str | None) -> PromptInput:
    """The request's prompt input: its actions (plus `query`, the search being typed now, unless it is the last
    action already) and the memory as of `at`. A logged search is in `actions` already: passing it again would
    add it a second time, and the prompt would differ from the evaluation's."""
    acts = list(actions)
    if query and (not acts or acts[-1].query != query):  # the search the user is typing now
        acts.append(Action("search", None, query))
    memory = retriever.memory_for([a.query for a in acts if a.action == "search" and a.query], at)
    return PromptInput(tuple(acts), memory, ctx.category)


def generate_and_retrieve(runtime: LLMRuntime, bundle: Any, ctx: UserContext, actions: list[Action],
                          rec: Recommendation, at: pd.Timestamp, typed: str | None = None) -> tuple:
    """`llm` mode: the generated ID and title as the retrieval's queries. (ranked ids, sources, LLMInfo)."""
    from models.llm.generate import IdTrie
    from models.llm.prompt import parse_answer

    inp = prompt_input(bundle.retriever, ctx, actions, at, typed)
    text = build_prompt(inp, bundle.catalog_items, runtime.engine.tokenizer, runtime.prompt_cfg).text
    tries = None
    if runtime.constrained:
        if ctx.category not in runtime.tries:
            ids = bundle.items.index[bundle.items["category"] == ctx.category].tolist()
            runtime.tries[ctx.category] = IdTrie(runtime.engine.tokenizer, ids)
        tries = [runtime.tries[ctx.category]]
    answer = runtime.engine.generate([text], runtime.gen_cfg, tries)[0]
    parsed = parse_answer(answer)
    items = bundle.items
    valid = parsed.item_id is not None and parsed.item_id in items.index \
        and items.at[parsed.item_id, "category"] == ctx.category
    id_vec = runtime.id_vector_of([parsed.item_id if valid else None])
    id_vec = None if id_vec is None or np.isnan(id_vec).any() else id_vec[0]
    title_vec = None
    if parsed.title and normalize_text(parsed.title):
        title_vec = l2_normalize(bundle.retriever.encoder.encode([normalize_text(parsed.title)]))[0]
    out = bundle.retriever.recommend(ctx, id_vector=id_vec, title_vector=title_vec)
    info = LLMInfo(model=runtime.version, prompt_version=PROMPT_VERSION, generated_text=answer,
                   generated_item_id=parsed.item_id, generated_title=parsed.title, well_formed=parsed.well_formed)
    ranked = list(out.items) or list(rec.items)
    return ranked, {i: out.source(i) for i in ranked}, info


def rank_candidates(runtime: LLMRuntime, bundle: Any, user_id: str, ctx: UserContext, actions: list[Action],
                    rec: Recommendation, at: pd.Timestamp, typed: str | None = None) -> tuple:
    """`llm-rank` mode: the list's first candidates re-ordered. With the learned ranker and a `ranker-llm` second
    pass in the bundle, the ranker's top 20 are re-ordered by the second pass over the LLM's letter scores and the
    ranker's (`models.ranker.llm_pass.second_pass`, as the `ranker-llm` evaluation); otherwise by the letter
    distribution alone."""
    cands = list(rec.items[: runtime.candidates])
    two_pass = bundle.second_pass is not None and len(rec.scores) >= len(cands)
    if two_pass and not bundle.second_pass.boosters:  # the pass kept the ranker's order: the LLM would change nothing
        return list(rec.items), {i: rec.source(i) for i in rec.items}, LLMInfo(
            model=runtime.version, prompt_version=PROMPT_VERSION, candidates=cands, reordered_by="ranker")
    inp = prompt_input(bundle.retriever, ctx, actions, at, typed)
    order = display_order(user_id, len(cands))
    block = candidate_block([cands[i] for i in order], bundle.catalog_items, runtime.prompt_cfg)
    text = build_prompt(inp, bundle.catalog_items, runtime.engine.tokenizer, runtime.prompt_cfg,
                        candidates=block).text
    scores = np.zeros(len(cands))
    if len(cands) > 1:
        scores[order] = runtime.engine.letter_scores([text], [len(cands)], 1)[0]
    if two_pass:
        from models.ranker.llm_pass import second_pass

        order2, _ = second_pass(np.arange(len(cands)), np.asarray(rec.scores[: len(cands)]), scores,
                                bundle.second_pass)  # list positions, in the second pass's order
        top = [cands[i] for i in order2]
    else:
        top = [cands[i] for i in np.lexsort((np.arange(len(cands)), -np.round(scores, 9)))]
    ranked = top + rec.items[len(cands):]
    info = LLMInfo(model=runtime.version, prompt_version=PROMPT_VERSION, candidates=cands,
                   reordered_by="ranker-llm" if two_pass else "letters")
    return ranked, {i: rec.source(i) for i in ranked}, info
