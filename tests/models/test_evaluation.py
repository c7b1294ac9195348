"""Ranking metrics checked against values worked out by hand, and `evaluate` end to end on a 2-category catalog."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import (
    EvalResult,
    ceiling,
    evaluate,
    load_oracle,
    metrics_from_ranks,
    metrics_table,
    ranks_from_scores,
    top_n,
)
from models.catalog import Catalog

LOG2_3 = math.log2(3)


def test_ranks_from_scores_pessimistic_ties() -> None:
    scores = np.array([
        [0.5, 0.9, 0.5, 0.1, 0.5],
        [0.5, 0.9, 0.5, 0.1, 0.5],
        [0.5, 0.9, 0.5, 0.1, 0.5],
        [1.0, 1.0, 1.0, 1.0, 1.0],
    ])  # fmt: skip
    # row 0, target col 0 (0.5): one higher (0.9) + two other 0.5s tied ahead -> 1 + 1 + 2 = 4
    # row 1, target col 1 (0.9): nothing higher, no ties -> 1
    # row 2, target col 3 (0.1): four higher -> 5
    # row 3, all equal: the four others tie ahead -> 5 (the worst rank, never the best)
    assert ranks_from_scores(scores, np.array([0, 1, 3, 2])).tolist() == [4, 1, 5, 5]


def test_metrics_from_ranks_by_hand() -> None:
    m = metrics_from_ranks(np.array([1, 3, 11]), k=10)
    # recall@10: ranks 1 and 3 hit, 11 misses -> 2/3
    # ndcg@10: (1/log2(2) + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3 = 0.5
    # mrr: (1 + 1/3 + 1/11) / 3 = (33 + 11 + 3) / 99 = 47/99
    assert m == {
        "n": 3,
        "recall@10": pytest.approx(2 / 3),
        "ndcg@10": pytest.approx(0.5),
        "mrr": pytest.approx(47 / 99),
    }
    m1 = metrics_from_ranks([1, 3, 11], k=1)
    assert (m1["recall@1"], m1["ndcg@1"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert metrics_from_ranks([7], k=10)["ndcg@10"] == pytest.approx(1 / 3)  # 1/log2(8)
    empty = metrics_from_ranks([], k=10)
    assert empty["n"] == 0 and math.isnan(empty["recall@10"]) and math.isnan(empty["mrr"])


def test_top_n_puts_the_target_after_its_ties() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]])
    target = np.array([2])
    # 0.9 first, then the 0.5 ties in catalog order (0, 4), then the target 2, then 0.1 -> target at position 4.
    top = top_n(scores, target, n=5)
    assert top.tolist() == [[1, 0, 4, 2, 3]]
    assert top[0].tolist().index(2) + 1 == ranks_from_scores(scores, target)[0] == 4
    # n < columns, no tie at the cut: the top 3 are 0.9, then 0.5 at col 2 (before the tied target 4), then 4.
    scores = np.array([[0.2, 0.9, 0.5, 0.1, 0.5, 0.3]])
    assert top_n(scores, np.array([4]), n=3).tolist() == [[1, 2, 4]]
    assert ranks_from_scores(scores, np.array([4])).tolist() == [3]


def test_top_n_cut_through_ties() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]])
    # target col 2 has rank 4 (0.9, then ties 0 and 4 ahead of it) -> the top 3 is [1, 0, 4] and excludes it.
    assert ranks_from_scores(scores, np.array([2])).tolist() == [4]
    assert top_n(scores, np.array([2]), n=3).tolist() == [[1, 0, 4]]


# --- evaluate end to end ------------------------------------------------------------------------------------------

# Clothing prices are higher than any footwear price: if the ranking were not restricted to the target's
# category, C1/C2 would push every footwear target down.
ITEMS = pd.DataFrame({
    "item_id": ["F3", "C2", "F1", "C1", "F2"],  # unsorted on purpose: the catalog sorts by item_id
    "category": ["Footwear", "Clothing", "Footwear", "Clothing", "Footwear"],
    "price": [30.0, 70.0, 30.0, 60.0, 50.0],
})  # fmt: skip
TARGETS = pd.DataFrame({
    "user_id": ["u1", "u2", "u3"],
    "category": ["Footwear", "Clothing", "Footwear"],
    "target_item_id": ["F2", "C1", "F3"],
    "cold_start": [False, True, False],
    "target_ts": pd.Timestamp("2024-03-01", tz="UTC"),
})  # fmt: skip


class PriceScorer:
    """Scores every item by its price; records what it was called with."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        self.calls.append((batch["category"].tolist(), self.catalog.item_ids[cat_rows].tolist()))
        return np.tile(self.catalog.items["price"].to_numpy()[cat_rows], (len(batch), 1))


def test_catalog_order() -> None:
    cat = Catalog.from_items(ITEMS)
    assert cat.item_ids.tolist() == ["C1", "C2", "F1", "F2", "F3"]
    assert {c: r.tolist() for c, r in cat.rows.items()} == {"Clothing": [0, 1], "Footwear": [2, 3, 4]}
    assert cat.index_of(["F2", "C1"]).tolist() == [3, 0]
    with pytest.raises(KeyError, match="not in the catalog"):
        cat.index_of(["F2", "nope"])


@pytest.mark.parametrize(("batch_size", "max_cells"), [(1, None), (256, None), (256, 3)])
def test_evaluate_by_hand(batch_size: int, max_cells: int | None, tmp_path: Path) -> None:
    catalog = Catalog.from_items(ITEMS)
    scorer = PriceScorer(catalog)
    res = evaluate("price", scorer, TARGETS, catalog, k=2, batch_size=batch_size, max_cells=max_cells,
                   progress=False)
    # Every call sees one category and only that category's items.
    for cats, ids in scorer.calls:
        assert len(set(cats)) == 1 and ids == sorted(ITEMS.loc[ITEMS["category"] == cats[0], "item_id"])
    # One call per target where a batch holds one target (3 Footwear cells = one target's row), else per category.
    assert len(scorer.calls) == (3 if batch_size == 1 or max_cells == 3 else 2)
    r = res.rankings
    # Clothing (C2 70 > C1 60): C1 rank 2. Footwear (F2 50 > F1 30 = F3 30): F2 rank 1; F3 ties with F1 -> rank 3.
    # Rows come per category (sorted), targets in input order within a category.
    assert r[
        ["user_id", "category", "target_item_id", "n_category_items", "cold_start", "target_rank"]
    ].values.tolist() == [
        ["u2", "Clothing", "C1", 2, True, 2],
        ["u1", "Footwear", "F2", 3, False, 1],
        ["u3", "Footwear", "F3", 3, False, 3],
    ]
    assert [list(x) for x in r["ranked_item_ids"]] == [["C2", "C1"], ["F2", "F1", "F3"], ["F2", "F1", "F3"]]
    m = res.metrics
    # k=2: recall = 2/3 (rank 3 misses); ndcg = (1/log2(3) + 1 + 0) / 3; mrr = (1/2 + 1 + 1/3) / 3 = 11/18
    assert m["overall"] == {
        "n": 3,
        "recall@2": pytest.approx(2 / 3),
        "ndcg@2": pytest.approx((1 / LOG2_3 + 1) / 3),
        "mrr": pytest.approx(11 / 18),
    }
    assert m["per_category"]["Footwear"] == {
        "n": 2,
        "recall@2": 0.5,
        "ndcg@2": 0.5,
        "mrr": pytest.approx(2 / 3),
        "n_items": 3,
    }
    assert m["per_category"]["Clothing"]["n_items"] == 2 and m["per_category"]["Clothing"]["mrr"] == 0.5
    assert m["cold_start"]["n"] == 1 and m["cold_start"]["mrr"] == 0.5  # only C1 is cold
    assert m["warm"]["mrr"] == pytest.approx(2 / 3)
    assert (m["method"], m["k"]) == ("price", 2)

    out = res.save(tmp_path / "eval")
    assert out == tmp_path / "eval" / "price"
    saved = json.loads((out / "metrics.json").read_text())
    back = pd.read_parquet(out / "rankings.parquet")
    assert back["target_rank"].tolist() == [2, 1, 3]
    assert [list(x) for x in back["ranked_item_ids"]] == [list(x) for x in r["ranked_item_ids"]]
    assert saved["overall"] == pytest.approx(metrics_from_ranks(back["target_rank"].to_numpy(), k=2))


def test_evaluate_nan_scores_rank_last_and_bad_shapes_raise() -> None:
    catalog = Catalog.from_items(ITEMS)
    targets = TARGETS.iloc[[0]]  # F2, Footwear (3 items)

    def nan_target(batch: pd.DataFrame, cat_rows: np.ndarray) -> np.ndarray:
        return np.array([[1.0, np.nan, 2.0]])  # F1, F2 (the target), F3

    res = evaluate("nan", nan_target, targets, catalog, progress=False)
    assert res.rankings["target_rank"].tolist() == [3]  # NaN -> -inf: below both finite scores
    with pytest.raises(ValueError, match="expected"):
        evaluate("bad", lambda b, rows: np.zeros((len(b), len(rows) + 1)), targets, catalog, progress=False)


def test_basket_hit_rate_by_hand() -> None:
    """Basket hit: any item bought at the target's moment (its category only) in the top k, ties against it."""
    catalog = Catalog.from_items(ITEMS)
    targets = TARGETS.assign(moment_items=[
        ["F3", "F2"],  # u1: target F2 (rank 1) -> basket rank 1
        ["C1", "C2", "F1"],  # u2: target C1 (rank 2); C2 ranks 1; F1 is Footwear, never in the Clothing list -> 1
        ["F1", "F3"],  # u3: target F3 (rank 3, tied with F1 at 30); F1 ties with F3 -> also rank 3
    ])
    res = evaluate("price", PriceScorer(catalog), targets, catalog, k=2, progress=False)
    r = res.rankings
    assert r["target_rank"].tolist() == [2, 1, 3]  # rows per category: u2 (Clothing), u1, u3
    assert r["basket_rank"].tolist() == [1, 1, 3]
    assert r["moment_size"].tolist() == [2, 2, 2]
    # k=2: u2 and u1 hit, u3 misses -> 2/3; recall@2 is also 2/3 here, but u2's hit comes from its basket-mate.
    assert res.metrics["basket"] == {"n": 3, "hit@2": pytest.approx(2 / 3), "multi_item_share": 1.0}
    table = metrics_table([res.metrics], basket=True, k=2)
    assert "basket HR@2" in table.splitlines()[0] and "| 0.6667 |" in table.splitlines()[2]
    # Without moment_items there is no basket metric, and the plain table has no basket column.
    plain = evaluate("price", PriceScorer(catalog), TARGETS, catalog, k=2, progress=False)
    assert "basket" not in plain.metrics and "basket_rank" not in plain.rankings
    assert "basket" not in metrics_table([plain.metrics], k=2)


def _result(method: str, recall: float, ndcg: float, mrr: float) -> dict:
    overall = {"n": 4, "recall@10": recall, "ndcg@10": ndcg, "mrr": mrr}
    cold = {"n": 1, "recall@10": 0.0, "ndcg@10": 0.0, "mrr": 0.125}
    return {"method": method, "overall": overall, "cold_start": cold}


def test_metrics_table_with_and_without_ceiling(tmp_path: Path) -> None:
    results = [_result("pop", 0.25, 0.2, 0.1)]
    plain = metrics_table(results)
    assert "ceiling" not in plain
    assert "| pop | 4 | 0.2500 | 0.2000 | 0.1000 | 1 | 0.0000 | 0.0000 | 0.1250 |" in plain.splitlines()
    oracle = {"all": {"n": 4, "exp_recall10": 0.5, "exp_ndcg10": 0.4, "exp_mrr": 0.25}}
    lines = metrics_table(results, oracle).splitlines()
    assert "| ceiling (oracle exp_*) | 4 | 0.5000 | 0.4000 | 0.2500 | | | | |" in lines
    assert (
        lines.index("| ceiling (oracle exp_*) | 4 | 0.5000 | 0.4000 | 0.2500 | | | | |") == 2
    )  # first data row
    # fractions of the ceiling: 0.25/0.5, 0.2/0.4, 0.1/0.25
    assert "| pop | 0.500 | 0.500 | 0.400 |" in lines

    (tmp_path / "oracle_metrics.json").write_text(json.dumps(oracle))
    assert load_oracle(tmp_path) == oracle
    assert load_oracle(tmp_path / "missing") is None and load_oracle(None) is None


def test_eval_result_save_round_trip(tmp_path: Path) -> None:
    rankings = pd.DataFrame({"target_rank": [1, 3, 11], "ranked_item_ids": [["a"], ["b"], ["c"]]})
    res = EvalResult("m", rankings, metrics_from_ranks(rankings["target_rank"].to_numpy()))
    out = res.save(tmp_path)
    assert json.loads((out / "metrics.json").read_text())["mrr"] == pytest.approx(47 / 99)
    assert pd.read_parquet(out / "rankings.parquet")["target_rank"].tolist() == [1, 3, 11]


def test_items_released_after_the_target_are_not_ranked() -> None:
    # F1 (30) and C2 (70) are released after the targets' time; F3 is released exactly at it (on sale).
    t = pd.Timestamp("2024-03-01", tz="UTC")
    items = ITEMS.assign(created_at=[t, t + pd.Timedelta(days=1), t + pd.Timedelta(seconds=1), t, t])
    catalog = Catalog.from_items(items)
    res = evaluate("price", PriceScorer(catalog), TARGETS, catalog, k=2, progress=False)
    r = res.rankings
    # Clothing: only C1 is on sale -> rank 1 (C2, priced higher, does not count). Footwear: F2 (50), F3 (30): F2
    # rank 1; F3 rank 2 (its tie F1 is not released, so it no longer counts against it).
    assert r[["target_item_id", "n_category_items", "n_candidates", "target_rank"]].values.tolist() == [
        ["C1", 2, 1, 1], ["F2", 3, 2, 1], ["F3", 3, 2, 2],
    ]  # fmt: skip
    assert [list(x) for x in r["ranked_item_ids"]] == [["C1"], ["F2", "F3"], ["F2", "F3"]]
    assert res.metrics["mean_candidates"] == pytest.approx(5 / 3)
    # A target bought before its recorded release still counts as on sale (it was bought), and only itself.
    late = Catalog.from_items(ITEMS.assign(created_at=t + pd.Timedelta(days=9)))
    assert evaluate("p", PriceScorer(late), TARGETS, late, progress=False).rankings["target_rank"].tolist() == [1, 1, 1]


def test_ceiling_is_the_mean_of_exactly_the_evaluated_targets() -> None:
    t = pd.Timestamp("2024-03-01", tz="UTC")
    oracle = pd.DataFrame({
        "user_id": ["u1", "u2", "u3", "u4"], "item_id": ["F2", "C1", "F3", "F1"],
        "timestamp": [t, t, t, t + pd.Timedelta(hours=1)],
        "exp_recall10": [0.9, 0.3, 0.6, 0.0], "exp_ndcg10": [0.8, 0.2, 0.5, 0.0], "exp_mrr": [0.7, 0.1, 0.4, 0.0],
    })  # fmt: skip
    # u4 is not a target; u3's row would match only with the same item and time.
    subset = TARGETS.iloc[[0, 1]]  # u1 F2 (warm, Footwear), u2 C1 (cold, Clothing)
    c = ceiling(subset, oracle)
    assert c["all"] == {"n": 2, "exp_recall10": pytest.approx(0.6), "exp_ndcg10": pytest.approx(0.5),
                        "exp_mrr": pytest.approx(0.4)}
    assert c["coverage"] == 1.0
    assert c["cold"]["n"] == 1 and c["cold"]["exp_ndcg10"] == pytest.approx(0.2)
    assert c["Footwear"]["exp_recall10"] == pytest.approx(0.9) and c["Clothing"]["exp_mrr"] == pytest.approx(0.1)
    # A target without an oracle row lowers the coverage and stays out of the mean.
    moved = TARGETS.assign(target_ts=[t, t, t + pd.Timedelta(minutes=5)])
    c3 = ceiling(moved, oracle)
    assert c3["all"]["n"] == 2 and c3["coverage"] == pytest.approx(2 / 3)
    assert ceiling(TARGETS, oracle)["all"]["exp_recall10"] == pytest.approx((0.9 + 0.3 + 0.6) / 3)


def test_summary_reports_the_cold_share_and_warm_but_rare_targets() -> None:
    catalog = Catalog.from_items(ITEMS)
    targets = TARGETS.assign(warm_rare=[True, False, False])
    m = evaluate("price", PriceScorer(catalog), targets, catalog, k=2, progress=False).metrics
    assert m["cold_share"] == pytest.approx(1 / 3)
    assert m["warm_rare"]["n"] == 1 and m["warm_rare"]["mrr"] == 1.0  # u1's F2 has rank 1


def test_period_scorer_gives_each_target_its_fit() -> None:
    """Two fits starting at t0 and t0 + 7 days; each 'scorer' scores every column with its own constant plus the
    column index, and records what it was handed. Targets before the second start go to the first (one before t0
    too), the rest to the second; the scores come back in batch order, `demote` split the same way."""
    from evaluation.periods import PeriodScorer, parts

    t0 = pd.Timestamp("2024-03-01", tz="UTC")

    class Const:
        tie_aware = True

        def __init__(self, value: float) -> None:
            self.value, self.seen = value, []

        def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
            self.seen.append((batch["user_id"].tolist(), None if demote is None else demote.tolist()))
            return np.full((len(batch), len(cat_rows)), self.value) + np.arange(len(cat_rows))

    first, second = Const(10.0), Const(20.0)
    scorer = PeriodScorer([t0, t0 + pd.Timedelta(days=7)], [first, second])
    batch = pd.DataFrame({"user_id": ["a", "b", "c", "d"],
                          "target_ts": [t0 + pd.Timedelta(days=8), t0 + pd.Timedelta(days=1), t0 - pd.Timedelta(days=1),
                                        t0 + pd.Timedelta(days=7)]})
    out = scorer(batch, np.array([5, 6]), demote=np.array([1, 0, 1, 0]))
    assert out.tolist() == [[20, 21], [10, 11], [10, 11], [20, 21]]
    assert first.seen == [(["b", "c"], [0, 1])] and second.seen == [(["a", "d"], [1, 0])]
    assert scorer.tie_aware and parts(scorer) == [first, second] and parts(first) == [first]
    with pytest.raises(ValueError, match="one scorer per start"):
        PeriodScorer([t0], [first, second])


def test_in_sorted_is_isin_against_a_sorted_category() -> None:
    from evaluation.common import in_sorted

    cat_rows = np.array([2, 5, 9, 14])
    values = np.array([14, 1, 5, 20, 9, 3, 2])
    assert in_sorted(values, cat_rows).tolist() == [True, False, True, False, True, False, True]
    rng = np.random.default_rng(0)
    big = np.unique(rng.integers(0, 1000, 300))
    probe = rng.integers(-5, 1005, 500)
    assert np.array_equal(in_sorted(probe, big), np.isin(probe, big))
    assert in_sorted(values, np.zeros(0, np.int64)).tolist() == [False] * len(values)
