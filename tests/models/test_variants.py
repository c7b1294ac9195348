"""Tests for models/variants: candidate generation, features worked out by hand, re-ranking and the logit fit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.catalog import Catalog
from models.variants import (
    FEATURES,
    ItemAttributes,
    VariantConfig,
    VariantRanker,
    candidate_features,
    conditional_logit_nll,
    fit_variant_ranker,
)

T = pd.Timestamp("2024-03-01", tz="UTC")
L2, L3 = math.log(2), math.log(3)

# Rows (catalog order = item_id order): A1 A2 A3 A4 A5 B1 B2 H1 -> 0..7. A4 is released after T.
ITEMS = pd.DataFrame([
    ("A1", "FA", "sneaker", "Red", "8", T - pd.Timedelta(days=9)),
    ("A2", "FA", "sneaker", "Red", "9", T - pd.Timedelta(days=9)),
    ("A3", "FA", "sneaker", "Blue", "8", T - pd.Timedelta(days=9)),
    ("A4", "FA", "sneaker", "Blue", "9", T + pd.Timedelta(days=1)),
    ("A5", "FA", "sneaker", "Blue", "10", T - pd.Timedelta(days=9)),
    ("B1", "FB", "boot", "Green", "8", T - pd.Timedelta(days=9)),
    ("B2", "FB", "boot", "Green", "9", T - pd.Timedelta(days=9)),
    ("H1", "FH", "sneaker", "Blue", "9", T - pd.Timedelta(days=9)),
], columns=["item_id", "family_id", "subcategory", "color", "size", "created_at"]).assign(category="Footwear")
ROW = {i: r for r, i in enumerate(ITEMS["item_id"])}


def rows(*ids: str) -> np.ndarray:
    return np.array([ROW[i] for i in ids], np.int64)


@pytest.fixture(scope="module")
def attrs() -> ItemAttributes:
    return ItemAttributes.from_items(Catalog.from_items(ITEMS).items)


def features(attrs: ItemAttributes, cfg: VariantConfig = VariantConfig(), t: pd.Timestamp = T):
    cand, x = candidate_features(rows("B1", "A2"), rows("H1", "A3"), t.value, attrs, cfg)
    return [ITEMS["item_id"][r] for r in cand], {n: x[:, j] for j, n in enumerate(FEATURES)}


def test_family_index(attrs: ItemAttributes) -> None:
    assert attrs.variants(attrs.family[ROW["A2"]]).tolist() == rows("A1", "A2", "A3", "A4", "A5").tolist()
    assert attrs.variants(attrs.family[ROW["B1"]]).tolist() == rows("B1", "B2").tolist()
    assert attrs.size[ROW["A1"]] == attrs.size[ROW["B1"]] != attrs.size[ROW["A2"]]


def test_candidates_are_released_variants_of_the_list_families_in_order(attrs: ItemAttributes) -> None:
    # Families in list order FB, FA; within a family the listed variant first, then catalog order; A4 not released.
    cand, _ = features(attrs)
    assert cand == ["B1", "B2", "A2", "A1", "A3", "A5"]
    cand, _ = features(attrs, t=T + pd.Timedelta(days=2))
    assert cand == ["B1", "B2", "A2", "A1", "A3", "A4", "A5"]
    cand, _ = features(attrs, VariantConfig(families=1))
    assert cand == ["B1", "B2"]


def test_features_by_hand(attrs: ItemAttributes) -> None:
    # History: H1 (sneaker, Blue, 9) then A3 (FA, sneaker, Blue, 8). Candidates B1 B2 A2 A1 A3 A5.
    _, f = features(attrs)
    expect = {
        "family_rank": [0, 0, L2, L2, L2, L2],
        "listed": [1, 0, 1, 0, 0, 0],
        "listed_rank": [0, 0, L2, 0, 0, 0],  # B1 at list position 0, A2 at 1
        "family_variants": [L2, L2, math.log(4), math.log(4), math.log(4), math.log(4)],  # FA: A1 A2 A3 A5
        "size_subcategory": [0, 0, L2, L2, L2, 0],  # no boots in the history; sneaker 9: H1, sneaker 8: A3
        "size_category": [L2, L2, L2, L2, L2, 0],  # size 10 never bought in Footwear
        "size_mismatch": [0, 0, 0, 0, 0, 1],  # sneakers were seen, never in size 10
        "subcategory_items": [0, 0, L3, L3, L3, L3],  # two sneakers, no boots
        "colour": [0, 0, 0, 0, L3, L3],  # Blue twice
        "colour_recent": [0, 0, 0, 0, L3, L3],
        "family_colour": [0, 0, 0, 0, 0, L2],  # A3 is FA Blue; it does not count for itself
        "family_size": [0, 0, 0, L2, 0, 0],  # A3 is FA size 8: counts for A1, not for itself
        "family_items": [0, 0, L2, L2, L2, L2],
    }
    for name, values in expect.items():
        np.testing.assert_allclose(f[name], values, atol=1e-6, err_msg=name)
    _, f = features(attrs, VariantConfig(recent=1))  # only A3 (Blue) is recent
    np.testing.assert_allclose(f["colour_recent"], [0, 0, 0, 0, L2, L2], atol=1e-6)


def test_rerank_orders_candidates_by_score_then_keeps_the_rest(attrs: ItemAttributes) -> None:
    ranker = VariantRanker({"size_subcategory": 1.0}, VariantConfig(families=1))
    # FB's variants score 0 with no boot history: candidate order; then the rest of the list (A2's family is cut).
    out = ranker.rerank(rows("B1", "A2", "H1"), rows("H1", "A3"), T.value, attrs)
    assert [ITEMS["item_id"][r] for r in out] == ["B1", "B2", "A2", "H1"]
    ranker = VariantRanker({"size_subcategory": 1.0, "size_mismatch": -1.0})
    out = ranker.rerank(rows("B1", "A2"), rows("H1", "A3"), T.value, attrs)
    # Scores: A2 A1 A3 log 2, B1 B2 0, A5 -1; ties keep candidate order.
    assert [ITEMS["item_id"][r] for r in out] == ["A2", "A1", "A3", "B1", "B2", "A5"]


def test_unknown_feature_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown variant features"):
        VariantRanker({"colour_of_the_sky": 1.0})


def test_conditional_logit_nll_by_hand() -> None:
    # Two examples. 1: logits [0, ln 3], label 1 -> p 3/4. 2: logits [0, 0, (pad)], label 0 -> p 1/2.
    w = torch.zeros(len(FEATURES))
    w[0] = 1.0
    x = torch.zeros(2, 3, len(FEATURES))
    x[0, 1, 0] = math.log(3)
    x[0, 2, 0] = 100.0  # a padded slot: masked out
    mask = torch.tensor([[True, True, False], [True, True, False]])
    nll = conditional_logit_nll(w, x, mask, torch.tensor([1, 0]))
    assert float(nll) == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2, rel=1e-6)


def test_fit_learns_the_feature_that_predicts_the_choice() -> None:
    rng = np.random.default_rng(0)
    j = FEATURES.index("size_subcategory")
    examples = []
    for e in range(200):
        x = rng.normal(size=(8, len(FEATURES))).astype(np.float32)
        cand = np.arange(8) + 100 * e
        examples.append((cand, x, int(cand[np.argmax(x[:, j] * 3 + rng.normal(size=8))])))
    examples.append((np.arange(3), np.zeros((3, len(FEATURES)), np.float32), 99))  # label not a candidate
    ranker = fit_variant_ranker(examples, VariantConfig(), init={})
    info = ranker.fit_info
    assert (info["examples"], info["used"], info["skipped"]) == (201, 200, 1)
    assert info["nll_after"] < info["nll_before"] == pytest.approx(math.log(8), rel=1e-6)  # zero init: uniform
    others = [abs(v) for n, v in ranker.weights.items() if n != "size_subcategory"]
    assert ranker.weights["size_subcategory"] > 1.0 > max(others)


def test_fit_without_usable_examples_keeps_init() -> None:
    ranker = fit_variant_ranker([(np.arange(2), np.zeros((2, len(FEATURES)), np.float32), 7)], init={"listed": 2.0})
    assert ranker.weights == {"listed": 2.0} and ranker.fit_info["fitted"] is False


def test_save_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    ranker = VariantRanker({"colour": 0.7}, VariantConfig(families=7), {"used": 3})
    back = VariantRanker.load(ranker.save(tmp_path / "v" / "ranker.json"))
    assert (back.weights, back.cfg, back.fit_info) == ({"colour": 0.7}, VariantConfig(families=7), {"used": 3})
