"""The LLM scorers over retrieval, on the tiny model: candidate scoring permutes its candidates and keeps the rest
of the list; the full framework (generation -> ID and title queries -> mixup) recommends only catalog items of the
target's category, whatever the model generates."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from evaluation.llm import (
    LLMCandidateScorer,
    LLMGenerateScorer,
    PromptFactory,
    candidate_summary,
    generation_summary,
    training_prompts,
)
from evaluation.metrics import evaluate
from evaluation.retrieval import RetrievalScorer, TitleQueryBuilder
from models.catalog import Catalog
from models.llm.generate import GenerateConfig
from models.llm.model import TINY, load_llm
from models.llm.prompt import CatalogItems, PromptConfig
from models.retrieval import RetrievalConfig
from models.text import HashingNgramEncoder, embed_catalog
from models.text.memory import AsOfMemory
from tests.helpers import T0, catalog_items, search_results


@pytest.fixture(scope="module")
def world():  # noqa: ANN201
    items = catalog_items()
    catalog = Catalog.from_items(items)
    encoder = HashingNgramEncoder()
    memory = AsOfMemory.build(search_results(items), encoder)
    title_vecs = embed_catalog(encoder, catalog.items)
    id_vecs = np.random.default_rng(1).normal(size=(len(catalog.items), 8)).astype(np.float32)
    id_of = dict(zip(catalog.item_ids, id_vecs, strict=True))

    def id_queries(histories: list[list[str]]) -> np.ndarray:
        return np.stack([np.mean([id_of[i] for i in h], axis=0) if h else np.zeros(8) for h in histories])

    titles = TitleQueryBuilder(encoder, memory, catalog, title_vecs)
    base = RetrievalScorer(catalog, id_vecs, title_vecs, id_queries, titles.queries, RetrievalConfig(mode="mixup", k=12))
    corpus = [*catalog.item_ids, *catalog.items["title"], "red sneakers", "blue dress"]
    llm = load_llm(TINY, corpus=corpus)
    return catalog, encoder, memory, base, llm, id_of


def targets(catalog: Catalog) -> pd.DataFrame:
    rows = []
    for i, (cat, hist, q) in enumerate([("Footwear", ["F0-red-8", "F1-black-8"], "red snekers"),
                                        ("Clothing", ["C3-red-7"], "blue dress"),
                                        ("Footwear", ["F2-blue-9"], None)]):
        target = catalog.item_ids[catalog.rows[cat]][5 + i]
        rows.append({"user_id": f"u{i}", "category": cat, "target_ts": T0, "cold_start": False,
                     "target_item_id": target,
                     "seq_actions": (["search"] if q else []) + ["click"] * len(hist),
                     "seq_item_ids": ([""] if q else []) + hist, "seq_queries": ([q] if q else []) + [""] * len(hist)})
    return pd.DataFrame(rows)


def test_candidate_scoring_returns_a_permutation_of_its_candidates(world) -> None:  # noqa: ANN001
    catalog, _, memory, base, llm, _ = world
    scorer = LLMCandidateScorer(base, llm, PromptFactory(memory), CatalogItems(catalog.items), catalog, n=5,
                                permutations=2)
    batch = targets(catalog)
    for cat in ("Footwear", "Clothing"):
        b = batch[batch["category"] == cat].reset_index(drop=True)
        rows = catalog.rows[cat]
        before, _ = scorer.base_rows(b, rows, None)
        scores = scorer(b, rows)
        for i, lst in enumerate(before):
            order = np.argsort(-scores[i], kind="stable")[: len(lst)]
            after = rows[order]
            assert sorted(after[:5].tolist()) == sorted(lst[:5].tolist())  # the first 5, re-ordered
            assert after[5:].tolist() == lst[5:].tolist()  # the rest of the list in its order
    s = candidate_summary([scorer])
    assert s["n"] == 3 and 0 <= s["candidate_recall"] <= 1 and len(scorer.top_letters) == 6  # 2 permutations each
    assert s["top_letter_A_unbiased"] == pytest.approx(1 / 5)


def test_full_framework_recommends_only_category_items(world) -> None:  # noqa: ANN001
    catalog, encoder, memory, base, llm, id_of = world

    def id_vector_of(ids: list[str | None]) -> np.ndarray:
        return np.stack([id_of[i] if i is not None else np.full(8, np.nan) for i in ids])

    for constrained in (False, True):
        scorer = LLMGenerateScorer(base, llm, PromptFactory(memory), CatalogItems(catalog.items), encoder,
                                   id_vector_of, gen_cfg=GenerateConfig(max_new_tokens=20, batch_size=2),
                                   constrained=constrained)
        res = evaluate("llm", scorer, targets(catalog), catalog, progress=False)
        cats = catalog.items.set_index("item_id")["category"]
        for cat, ranked in zip(res.rankings["category"], res.rankings["ranked_item_ids"], strict=True):
            assert len(ranked) == 12 * 0 + min(100, len(catalog.rows[cat]))
            assert (cats.loc[list(ranked)] == cat).all()
        summary = generation_summary(scorer.records, catalog)
        assert summary["n"] == 3
        if constrained:  # every generated ID is a real item of the target's category
            assert summary["valid_catalog_id_rate"] == 1.0
            assert all(cats[r.item_id] == t for r, t in zip(scorer.records, targets(catalog)["category"].sort_values(),
                                                           strict=True))


def test_training_prompts_shuffle_the_candidates_and_answer_with_the_bought_item(world) -> None:  # noqa: ANN001
    catalog, _, memory, base, llm, _ = world
    batch = targets(catalog)
    cfg = base.cfg
    base.cfg = RetrievalConfig(mode="title_only", k=36, exclude_seen=False)  # every item listed: all are candidates
    try:
        df = training_prompts(batch, base, PromptFactory(memory), CatalogItems(catalog.items), catalog,
                              llm.tokenizer, PromptConfig(candidate_style="full"), candidates=20)  # lines name IDs
        listed = {}
        for cat, g in batch.groupby("category"):
            rows = catalog.rows[cat]
            for u, cols in zip(g["user_id"], base.ranked(g.reset_index(drop=True), rows), strict=True):
                listed[u] = catalog.item_ids[rows[cols[:20]]].tolist()
    finally:
        base.cfg = cfg
    gen = df[df["kind"] == "generate"]
    assert len(gen) == 3 and all(r.startswith(f"ID: {t}\n") for r, t in
                                 zip(gen["response"], batch.sort_values("category")["target_item_id"], strict=True))
    cand = df[df["kind"] == "candidates"]
    assert len(cand) >= 1  # a candidate prompt only where the bought item is among the first 20
    targets_of = dict(zip(batch["user_id"], batch["target_item_id"], strict=True))
    for user, text, letter in zip(cand["user_id"], cand["text"], cand["response"], strict=True):
        shown = dict(re.findall(r"^([A-T])\. (\S+) ", text, flags=re.M))
        assert shown[letter] == targets_of[user]  # the response names the bought item's letter
        order = [shown[x] for x in sorted(shown)]
        assert sorted(order) == sorted(listed[user]) and order != listed[user]  # the list's 20, shuffled
    assert cand["n_candidates"].tolist() == [len(listed[u]) for u in cand["user_id"]]
    assert (gen["n_candidates"] == 0).all()


def test_generation_keeps_the_base_id_list_without_cold_items(world) -> None:  # noqa: ANN001
    """The framework's ID list is the base's: an item the ID model has no row for is never in it."""
    catalog, encoder, memory, base, llm, id_of = world
    known = np.arange(len(catalog.item_ids)) % 2 == 0  # every other item "on the cold row"
    masked = RetrievalScorer(base.catalog, base.id_vectors, base.title_vectors, base.id_queries, base.title_queries,
                             base.cfg, id_known=known)
    scorer = LLMGenerateScorer(masked, llm, PromptFactory(memory), CatalogItems(catalog.items), encoder,
                               lambda ids: np.stack([id_of.get(i, np.full(8, np.nan)) if i else np.full(8, np.nan)
                                                     for i in ids]),
                               gen_cfg=GenerateConfig(max_new_tokens=20, batch_size=2))
    assert np.array_equal(scorer.id_known, known)
    batch = targets(catalog)
    for cat, idx in batch.groupby("category").indices.items():
        rows = catalog.rows[cat]
        top = scorer.sources(batch.iloc[idx], rows).id_top  # (B, k) columns, -1 = PAD
        assert known[rows[top[top >= 0]]].all()
