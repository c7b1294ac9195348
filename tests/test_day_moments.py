"""Day-resolution data: a same-day basket is one moment, and nothing at a target's moment is visible to it.

An H&M-format fixture, through the real loader, ingest, feature tables, a Feast store and the splits. User uA buys H
on Jan 1, then on Jan 10 X1, X2, X3 and the target T, with T's row twice (one purchase of two units). User uB buys
X1, X2, X3 and T on Jan 9, and T again on Jan 10. For uA's Jan 10 target none of X1, X2, X3, T may be in the
history, the prompt, the ranker's seen flags or its history candidates; for uB's all of them are. The evaluation path
(Feast point-in-time join, `RankerScorer`) and the serving path (the online store as of the request, the
`OnlineRetriever` with the ranking stage) are both checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from evaluation.llm import PromptFactory
from feature_repo.features import write_feature_tables
from feature_repo.ingest import REPEAT, ingest
from feature_repo.loaders import load_with_info
from feature_repo.schema import CanonicalTables
from feature_repo.sequences import UserSequence
from feature_repo.splits import leave_one_out, temporal_split
from feature_repo.store import FeatureRepo
from models.llm.prompt import Action, CatalogItems, PromptConfig, PromptInput, action_lines
from models.ranker.candidates import CandidateConfig, TargetInputs
from models.ranker.features import FEATURE_NAMES
from models.ranker.stage import Ranked, RankingStage
from models.retrieval import RetrievalConfig
from models.text import HashingNgramEncoder
from serving.recommend import OnlineRetriever, context_from_features
from tests.helpers import (
    ARTICLES,
    BASKET,
    CATEGORY,
    DAY10,
    TRANSACTIONS,
    H,
    T,
    make_scorer,
    write_hm,
)

CFG = CandidateConfig(id_k=8, title_k=8, history=10)


@dataclass
class RecordingStage(RankingStage):
    """The real ranking stage, keeping what it ranked (so the serving path's candidates and features are visible)."""

    seen: list[tuple[TargetInputs, Ranked]] = field(default_factory=list)

    def rank(self, inp: TargetInputs, last_row: int | None = None) -> Ranked:
        out = super().rank(inp, last_row)
        self.seen.append((inp, out))
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("day_moments")
    raw, info = load_with_info(write_hm(root / "hm"), "hm")
    report = ingest(raw, root / "canonical")
    tables = CanonicalTables.read(root / "canonical")
    write_feature_tables(tables.items, tables.events, root / "features")
    repo = FeatureRepo(root / "features", root / "feast")
    repo.apply()
    splits = leave_one_out(tables.events, tables.items)
    targets = splits.split("test")
    hist = repo.history_before(targets["user_id"], targets["target_ts"])
    eval_targets = pd.concat([targets, hist.drop(columns="user_id")], axis=1)
    catalog, scorer, store, id_queries, memory = make_scorer(tables.items, tables.events, tables.search_results,
                                                             HashingNgramEncoder(), CFG)
    return {"root": root, "raw": raw, "info": info, "report": report, "tables": tables, "repo": repo,
            "splits": splits, "targets": eval_targets.set_index("user_id"), "catalog": catalog, "scorer": scorer,
            "store": store, "id_queries": id_queries, "memory": memory}


def items_of(actions: list, item_ids: list) -> list[str]:
    return [i for a, i in zip(actions, item_ids, strict=True) if a in ("click", "purchase")]


def prompt_ids(lines: list[str]) -> set[str]:
    return {a for a in ARTICLES if any(a in line for line in lines)}


def test_the_repeated_row_is_quarantined_and_the_counts_add_up(world: dict) -> None:
    assert world["info"].resolution == "day"
    assert world["report"].quarantined["events"] == {REPEAT: 1}
    q = pd.read_parquet(world["root"] / "canonical" / "quarantine" / "events.parquet")
    assert q[["reason", "user_id", "item_id"]].values.tolist() == [[REPEAT, "uA", T]]
    assert world["report"].kept["events"] + len(q) == len(world["raw"].events) == len(TRANSACTIONS)
    ua = world["tables"].events.query("user_id == 'uA'")
    assert ua["item_id"].tolist() == [H, *BASKET] and (ua["timestamp"].iloc[1:] == DAY10).all()


def test_targets_are_the_last_purchase_of_the_last_moment(world: dict) -> None:
    t = world["targets"]
    assert t.loc["uA", "target_item_id"] == T and t.loc["uA", "target_ts"] == DAY10
    assert list(t.loc["uA", "moment_items"]) == BASKET and t.loc["uA", "n_history"] == 1
    assert t.loc["uB", "target_item_id"] == T and list(t.loc["uB", "moment_items"]) == [T]
    # Leave-one-out: the validation target comes from the moment before (uA: H on Jan 1; uB: T of Jan 9's basket),
    # and training stops before it, so no basket-mate of a held-out target is training data.
    val = world["splits"].split("val").set_index("user_id")
    assert val.loc["uA", "target_item_id"] == H and val.loc["uB", "target_item_id"] == T
    train = world["splits"].train_events
    assert train.empty  # uA, uB: nothing before their validation moments; uC's one purchase is its test target
    assert set(world["splits"].targets["user_id"]) == {"uA", "uB", "uC"}
    # Temporal: a cut inside Jan 10's night would not split a day; the test window holds each basket whole.
    temporal = temporal_split(world["tables"].events, world["tables"].items,
                              cuts={"val": pd.Timestamp("2019-01-08", tz="UTC"), "test": DAY10})
    tt = temporal.split("test").set_index("user_id")
    assert tt.loc["uA", "target_item_id"] == T and list(tt.loc["uA", "moment_items"]) == BASKET
    assert (pd.to_datetime(temporal.train_events["timestamp"], utc=True) < pd.Timestamp("2019-01-08", tz="UTC")).all()


def test_evaluation_path_sees_nothing_of_the_targets_moment(world: dict) -> None:
    t = world["targets"]
    # History (Feast point-in-time join).
    assert items_of(t.loc["uA", "seq_actions"], t.loc["uA", "seq_item_ids"]) == [H]
    assert items_of(t.loc["uB", "seq_actions"], t.loc["uB", "seq_item_ids"]) == BASKET
    # The prompt (as the LLM stage builds it for evaluation targets).
    items = CatalogItems(world["tables"].items)
    batch = t.reset_index()
    prompts = dict(zip(batch["user_id"], PromptFactory(None).inputs(batch), strict=True))
    assert prompt_ids(action_lines(prompts["uA"], items, PromptConfig())) == {H}
    assert prompt_ids(action_lines(prompts["uB"], items, PromptConfig())) == set(BASKET)
    # The ranking stage: candidates, the history source, the seen flags and the popularity windows.
    scorer, catalog = world["scorer"], world["catalog"]
    cat_rows = catalog.rows[CATEGORY]
    inputs, _ = scorer.inputs(batch, cat_rows)
    ranked = {u: scorer.stage.rank(inp) for u, inp in zip(batch["user_id"], inputs, strict=True)}
    check_ranked(ranked["uA"], catalog, seen=False)
    check_ranked(ranked["uB"], catalog, seen=True)


def check_ranked(r: Ranked, catalog, seen: bool) -> None:  # noqa: ANN001
    """The basket items are candidates; seen (history source, seen flags) exactly when `seen`."""
    rows = catalog.index_of(BASKET)
    at = pd.Index(r.candidates.rows).get_indexer(rows)
    assert (at >= 0).all(), "every item of the small category is a candidate (title list)"
    x = r.features[at]  # (4, F) in BASKET order
    f = {name: x[:, FEATURE_NAMES.index(name)] for name in ("seen_count", "bought_before", "seen_age_h",
                                                            "family_seen_age_h", "pop_7d", "buy_30d")}
    hist_rank = r.candidates.ranks["history"][at]
    if seen:
        assert (hist_rank >= 0).all() and (f["seen_count"] == 1).all() and (f["bought_before"] == 1).all()
        assert np.allclose(f["seen_age_h"], 24.0) and np.allclose(f["family_seen_age_h"], 24.0)
    else:
        assert (hist_rank == -1).all() and (f["seen_count"] == 0).all() and (f["bought_before"] == 0).all()
        assert np.isnan(f["seen_age_h"]).all() and np.isnan(f["family_seen_age_h"]).all()
    # Popularity as of Jan 10 counts uB's Jan 9 purchases only (one each), for either user: nobody's Jan 10 rows.
    assert np.allclose(f["pop_7d"], np.log1p(1.0)) and np.allclose(f["buy_30d"], np.log1p(1.0))


def test_serving_path_sees_nothing_of_the_requests_moment(world: dict) -> None:
    repo: FeatureRepo = world["repo"]
    catalog = world["catalog"]
    # The online store as of the start of Jan 10: a request that day reads everything strictly before it.
    repo.materialize(end=DAY10 - pd.Timedelta(milliseconds=1))
    base = world["scorer"].stage
    stage = RecordingStage(base.ctx, base.searches, None, CFG)
    retriever = OnlineRetriever(world["store"], world["tables"].items, HashingNgramEncoder(), world["id_queries"],
                                cfg=RetrievalConfig(), memory=world["memory"], ranking=stage)
    items = CatalogItems(world["tables"].items)
    for user, expected, seen in (("uA", [H], False), ("uB", BASKET, True)):
        feats = repo.online([user])
        ctx = context_from_features(feats, category=CATEGORY, at=DAY10)
        assert list(ctx.history) == expected, user
        seq = UserSequence.from_features(feats)
        actions = tuple(Action(a, i, q) for a, i, q in zip(seq.actions, seq.item_ids, seq.queries, strict=True))
        assert prompt_ids(action_lines(PromptInput(actions, {}, CATEGORY), items,
                                       PromptConfig())) == set(expected)
        retriever.recommend(ctx)
        inp, ranked = stage.seen[-1]
        assert catalog.item_ids[inp.hist_rows].tolist() == expected
        check_ranked(ranked, catalog, seen=seen)
        # The same features as the evaluation path computes for this target.
        eval_batch = world["targets"].reset_index()
        eval_inp = world["scorer"].inputs(eval_batch[eval_batch["user_id"] == user], catalog.rows[CATEGORY])[0][0]
        eval_ranked = base.rank(eval_inp)
        assert np.array_equal(eval_ranked.candidates.rows, ranked.candidates.rows)
        seen_cols = [FEATURE_NAMES.index(n) for n in ("seen_count", "bought_before", "seen_age_h", "pop_7d")]
        assert np.allclose(eval_ranked.features[:, seen_cols], ranked.features[:, seen_cols], equal_nan=True)
    # After the day, the whole basket is history (the repeated row once: one purchase of two units).
    repo.materialize(end=DAY10 + pd.Timedelta(days=1))
    later = context_from_features(repo.online(["uA"]), category=CATEGORY, at=DAY10 + pd.Timedelta(days=1))
    assert list(later.history) == [H, *BASKET]
