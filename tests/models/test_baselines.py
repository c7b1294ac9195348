"""Baselines: popularity counts and last-search ordering checked by hand on a tiny catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from models.catalog import Catalog

D0 = pd.Timestamp("2024-05-01", tz="UTC")


def day(d: float) -> pd.Timestamp:
    return D0 + pd.Timedelta(days=d)


# Catalog order (by item_id): C1 C2 F1 F2 F3 F4. F4 is never interacted with (the highest catalog row).
ITEMS = pd.DataFrame({
    "item_id": ["F1", "F2", "F3", "F4", "C1", "C2"],
    "category": ["Footwear"] * 4 + ["Clothing"] * 2,
})  # fmt: skip
FOOT = ["F1", "F2", "F3", "F4"]

EVENTS = pd.DataFrame(
    [
        ("a", day(20), "click", "F2"),  # out of time order on purpose: the scorer sorts by time
        ("a", day(0), "click", "F1"),
        ("b", day(1), "click", "F2"),
        ("b", day(1), "purchase", "F2"),
        ("c", day(2), "search", None),  # searches are not interactions
        ("c", day(5), "click", "C1"),  # other category
        ("a", day(10), "click", "F1"),
        ("b", day(10), "purchase", "F3"),
    ],
    columns=["user_id", "timestamp", "action", "item_id"],
)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_items(ITEMS)


def _targets(*days: float) -> pd.DataFrame:
    return pd.DataFrame({"target_ts": [day(d) for d in days]})


def test_popularity_counts_strictly_before_the_target(catalog: Catalog) -> None:
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=None))
    foot = catalog.rows["Footwear"]
    assert catalog.item_ids[foot].tolist() == FOOT
    scores = pop(_targets(10, 21, 0, 1), foot)
    # before day 10: F1 x1 (day 0), F2 x2 (click + purchase on day 1), F3 0 (its purchase is AT day 10), F4 0
    # before day 21: F1 x2 (days 0, 10), F2 x3 (days 1, 1, 20), F3 x1 (day 10), F4 0
    # before day 0: nothing; before day 1: F1 x1 (the day-1 interactions are at the target time)
    assert scores.tolist() == [[1, 2, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    # Clothing: C1 x1 (day 5) before day 10, C2 0; footwear interactions do not count.
    assert pop(_targets(10), catalog.rows["Clothing"]).tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (5.0, [0, 0, 0, 0]),  # [day 5, day 10): only the Clothing click
        (8.5, [0, 0, 0, 0]),  # [day 1.5, day 10): F2's day-1 interactions are just outside
        (9.0, [0, 2, 0, 0]),  # [day 1, day 10): the window start is inclusive -> F2's two day-1 interactions
        (10.0, [1, 2, 0, 0]),  # [day 0, day 10): everything before day 10
    ],
)
def test_popularity_window(catalog: Catalog, window: float, expected: list[int]) -> None:
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=window))
    assert pop(_targets(10), catalog.rows["Footwear"]).tolist() == [expected]


def test_popularity_purchase_weight(catalog: Catalog) -> None:
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=None, purchase_weight=3.0))
    # before day 21: F1 2 clicks = 2; F2 2 clicks + 1 purchase x3 = 5; F3 1 purchase x3 = 3
    assert pop(_targets(21), catalog.rows["Footwear"]).tolist() == [[2, 5, 3, 0]]


def test_popularity_window_slides_over_targets_in_any_order_and_category(catalog: Catalog) -> None:
    """The scorer slides one window through a batch's targets in time order (adding what enters, taking out what
    leaves) and keeps the last category's interactions between calls: each row is still its own target's count."""
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=9.5, purchase_weight=2.0))
    foot, cloth = catalog.rows["Footwear"], catalog.rows["Clothing"]
    # [day -8, 1.5): F1@0, F2@1 click + purchase x2 | [1, 10.5): F2@1 x3, F1@10, F3@10 purchase x2
    # [1.5, 11): F1@10, F3@10 x2 (F2's day-1 interactions left) | [11, 20.5): F2@20 (disjoint from the one before)
    expected = {1.5: [1, 3, 0, 0], 10.5: [1, 3, 2, 0], 11: [1, 0, 2, 0], 20.5: [0, 1, 0, 0]}
    order = [10.5, 20.5, 1.5, 11]
    assert pop(_targets(*order), foot).tolist() == [expected[d] for d in order]
    assert pop(_targets(10, 16), cloth).tolist() == [[1, 0], [0, 0]]  # C1@5: in [0.5, 10), not in [6.5, 16)
    assert pop(_targets(11, 1.5), foot).tolist() == [expected[11], expected[1.5]]


# search 10 shows F3, C1, F1 (positions 1-3); search 11 shows F2. Rows are shuffled: the scorer sorts them.
SEARCH_RESULTS = pd.DataFrame({
    "search_id": [11, 10, 10, 10],
    "item_id": ["F2", "F1", "C1", "F3"],
    "position": [1, 3, 2, 1],
})  # fmt: skip


def test_last_search_ranks_its_results_first(catalog: Catalog) -> None:
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=None))
    scorer = LastSearchScorer(SEARCH_RESULTS, pop, catalog)
    # Histories strictly before each target (day 21), as the Feast join returns them (search id -1 = not a search).
    batch = pd.DataFrame({
        "target_ts": [day(21)] * 4,
        "seq_actions": [
            ["search", "click", "search", "click"],  # last search: 10
            ["click"],  # no search: popularity only
            ["search"],  # search 99 has no stored results: popularity only
            ["search", "click"],  # searched 11; the user's search 10 came AFTER the target, so it is not listed
        ],
        "seq_search_ids": [[11, -1, 10, -1], [-1], [99], [11, -1]],
    })  # fmt: skip
    scores = scorer(batch, catalog.rows["Footwear"])
    order = [[FOOT[c] for c in np.argsort(-row, kind="stable")] for row in scores]
    # popularity before day 21: F1 2, F2 3, F3 1, F4 0 -> F2, F1, F3, F4
    # row 0: search 10's footwear results in position order (F3 pos 1, F1 pos 3; C1 is another category), then
    #        the rest by popularity (F2 3, F4 0)
    # row 3: search 11's F2, then F1 2, F3 1, F4 0
    assert order == [
        ["F3", "F1", "F2", "F4"],
        ["F2", "F1", "F3", "F4"],
        ["F2", "F1", "F3", "F4"],
        ["F2", "F1", "F3", "F4"],
    ]
    assert scores[1].tolist() == [2, 3, 1, 0] and scores[2].tolist() == [2, 3, 1, 0]
    # The boosted results sit above every popularity score in the batch (max 3).
    assert min(scores[0][[0, 2]]) > 3 and scores[3][1] > 3
    assert scores[3][[0, 2, 3]].tolist() == [2, 1, 0]


def test_last_search_only_out_of_category_results(catalog: Catalog) -> None:
    pop = PopularityScorer(EVENTS, catalog, PopularityConfig(window_days=None))
    scorer = LastSearchScorer(SEARCH_RESULTS, pop, catalog)
    batch = pd.DataFrame({"target_ts": [day(21)], "seq_actions": [["search"]], "seq_search_ids": [[10]]})
    # For a Clothing target search 10 contributes only C1 (position 2): C1 first, then C2 by popularity (0).
    scores = scorer(batch, catalog.rows["Clothing"])
    assert scores[0][0] > scores[0][1] and scores[0][1] == 0
