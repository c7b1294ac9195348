"""Mixup, single-source ablations and reciprocal rank fusion, checked against hand-worked examples."""

import numpy as np
import pytest

from models.retrieval import (
    PAD,
    id_only,
    mixup,
    mixup_batch,
    mixup_indices,
    rank_fusion,
    title_only,
    unique_rows,
)

# -- mixup ------------------------------------------------------------------------------------------


def test_mixup_n1_skips_title_duplicate_of_id_top() -> None:
    # position 1: ID's "a"; then title list from its top: "e", "a" (taken), "f", "g"
    assert mixup(["a", "b", "c", "d"], ["e", "a", "f", "g"], k=4, n=1) == ["a", "e", "f", "g"]


def test_mixup_n2_overlapping_lists() -> None:
    # ID top-2 "a", "b"; title: "b" (taken), "x", "a" (taken), "y"
    assert mixup(["a", "b", "c"], ["b", "x", "a", "y"], k=4, n=2) == ["a", "b", "x", "y"]


def test_mixup_n3_title_fills_rest() -> None:
    # ID top-3 "a", "b", "c"; title: "c" (taken), "d", "e"
    assert mixup(["a", "b", "c", "d"], ["c", "d", "e"], k=5, n=3) == ["a", "b", "c", "d", "e"]


def test_mixup_title_not_read_past_k() -> None:
    assert mixup(["a", "b"], ["x", "y", "z"], k=3, n=1) == ["a", "x", "y"]


def test_mixup_short_title_list_falls_back_to_rest_of_id_list() -> None:
    # title gives "b", "x"; it runs out at 3 items, so ID list continues after position 1: "b" (taken), "c"
    assert mixup(["a", "b", "c", "d"], ["b", "x"], k=4, n=1) == ["a", "b", "x", "c"]


def test_mixup_both_short_returns_fewer_than_k() -> None:
    assert mixup(["a"], ["a"], k=3, n=1) == ["a"]
    assert mixup([], [], k=3, n=1) == []


def test_mixup_empty_id_list_is_title_list() -> None:
    assert mixup([], ["x", "y", "x", "z"], k=3, n=1) == ["x", "y", "z"]


def test_mixup_n_larger_than_k_is_id_only() -> None:
    assert mixup(["a", "b", "c"], ["x"], k=2, n=3) == ["a", "b"]


def test_mixup_n0_is_title_first() -> None:
    assert mixup(["a", "b"], ["x", "a"], k=3, n=0) == ["x", "a", "b"]


def test_mixup_dedupes_within_each_list() -> None:
    # ID top-2 distinct is "a", "b" (the repeated "a" is not counted twice); title "x", "x" -> "x"
    assert mixup(["a", "a", "b"], ["x", "x", "y"], k=4, n=2) == ["a", "b", "x", "y"]


def test_mixup_k0_and_negative() -> None:
    assert mixup(["a"], ["b"], k=0) == []
    with pytest.raises(ValueError):
        mixup(["a"], ["b"], k=-1)
    with pytest.raises(ValueError):
        mixup(["a"], ["b"], k=1, n=-1)


def test_id_only_and_title_only_dedupe_then_truncate() -> None:
    assert id_only(["a", "b", "a", "c", "d"], k=3) == ["a", "b", "c"]
    assert title_only(["x", "x", "y"], k=5) == ["x", "y"]
    assert title_only(["x", "y", "z"], k=0) == []


def test_mixup_batch_applies_per_user() -> None:
    got = mixup_batch([["a", "b"], ["c"]], [["b", "x"], ["y", "c", "z"]], k=3, n=1)
    assert got == [["a", "b", "x"], ["c", "y", "z"]]
    with pytest.raises(ValueError):
        mixup_batch([["a"]], [], k=3)


# -- rank fusion ------------------------------------------------------------------------------------


def test_rank_fusion_by_hand_c60() -> None:
    # a: 1/61 = .016393; b: 1/62 + 1/61 = .032522; c: 1/63 + 1/62 = .032002; d: 1/63 = .015873
    assert rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=4) == ["b", "c", "a", "d"]
    assert rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=2) == ["b", "c"]


def test_rank_fusion_constant_changes_the_order() -> None:
    lists = [["q", "b"], ["p", "x", "y", "b"]]
    # c=0: q 1, p 1 (tie: q seen first), b 1/2 + 1/4 = .75, x .5, y .333
    assert rank_fusion(lists, k=5, c=0) == ["q", "p", "b", "x", "y"]
    # c=60: b 1/62 + 1/64 = .03175, q = p = 1/61 = .01639 (tie), x 1/62 = .01613, y 1/63 = .01587
    assert rank_fusion(lists, k=5, c=60) == ["b", "q", "p", "x", "y"]


def test_rank_fusion_weights() -> None:
    lists = [["a", "b", "c"], ["b", "c", "d"]]
    # c=1, weights (3, 1): a 3/2 = 1.5, b 3/3 + 1/2 = 1.5 (tie: a first), c 3/4 + 1/3 = 1.083, d 1/4
    assert rank_fusion(lists, k=4, c=1, weights=[3, 1]) == ["a", "b", "c", "d"]
    # weight 0 on the second list: pure first list, then "d" with score 0
    assert rank_fusion(lists, k=4, c=1, weights=[1, 0]) == ["a", "b", "c", "d"]
    # weight 0 on the first list: pure second list, then "a" with score 0
    assert rank_fusion(lists, k=4, c=1, weights=[0, 1]) == ["b", "c", "d", "a"]
    with pytest.raises(ValueError):
        rank_fusion(lists, k=4, weights=[1.0])


def test_rank_fusion_repeat_in_one_list_counts_once() -> None:
    # c=0, dedupe: a 1, b 1/2. Counting every repeat would give b 1/2 + 1/3 + 1/4 = 1.083 > a.
    assert rank_fusion([["a", "b", "b", "b"]], k=2, c=0) == ["a", "b"]


# -- vectorised -------------------------------------------------------------------------------------


def test_unique_rows_by_hand() -> None:
    got = unique_rows(np.array([[3, 1, 3, PAD, 2], [5, 5, 5, 5, 5]]))
    np.testing.assert_array_equal(got, [[3, 1, 2, PAD, PAD], [5, PAD, PAD, PAD, PAD]])


def test_mixup_indices_by_hand_with_padding() -> None:
    ids = np.array([[0, 1, 2], [7, 8, PAD]])
    titles = np.array([[1, 5], [8, 7]])
    # row 0: 0 | 1 5 | (1) 2 ; row 1: 7 | 8 (7) | (8) -> only two items, padded
    np.testing.assert_array_equal(mixup_indices(ids, titles, k=4, n=1), [[0, 1, 5, 2], [7, 8, PAD, PAD]])


@pytest.mark.parametrize("k,n", [(1, 1), (5, 1), (5, 2), (10, 3), (25, 0), (8, 12)])
def test_mixup_indices_matches_list_mixup(k: int, n: int) -> None:
    rng = np.random.default_rng(k * 100 + n)
    ids = rng.integers(0, 15, size=(64, 10))  # small item space: many repeats and overlaps
    titles = rng.integers(0, 15, size=(64, 7))
    got = mixup_indices(ids, titles, k=k, n=n)
    assert got.shape == (64, k)
    for row, a, b in zip(got, ids, titles, strict=True):
        want = mixup([str(x) for x in a], [str(x) for x in b], k=k, n=n)
        assert [str(x) for x in row if x != PAD] == want
        assert (row[len(want) :] == PAD).all()
