"""Temporal, leave-one-out and cross-category splits on the tiny handmade dataset (expected rows worked out in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from feature_repo.splits import (
    Splits,
    cross_category,
    fit_index,
    fit_layouts,
    held_out_phrase,
    leave_one_out,
    make_splits,
    ordered_events,
    read_protocol,
    read_refits,
    read_splits,
    record_test_sample,
    refit_times,
    sample_rows,
    seeded_positions,
    temporal_cuts,
    temporal_split,
    training_cutoffs,
    training_events,
    training_user_mask,
    with_test_sample,
    with_training_users,
    write_splits,
)
from tests.conftest import at, make_tiny_tables


def _rows(df: pd.DataFrame, cols: list[str]) -> list[tuple]:
    return list(df[cols].itertuples(index=False, name=None))


def test_leave_one_out_targets(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    cols = ["user_id", "split", "target_item_id", "target_ts", "category", "n_history", "n_prior", "cold_start",
            "warm_rare"]
    # u1 buys F1, C1, F2 -> test F2, val C1; u2 buys only C2 -> test only; u3 never buys -> nothing;
    # u4 buys A1 then A2 at the same minute: one moment, so one target (the last in file order, A2) and no val row
    # (the val target comes from the moment before, and u4 has none). moment_items = everything bought then.
    # n_history = events strictly before the target's timestamp (u4's A1 shares A2's minute, so it is not history).
    # n_prior = clicks/purchases of the item by anyone strictly before the target's time: F2 <- u1's click @21,
    # C2 <- u2's click @6, A2 <- none (cold), C1 <- u1's click @11, A1 <- u4's click @40. cold_start = n_prior == 0.
    # warm_rare = warm but seen fewer than 2 times in the training events (F2: 0, C2: 1, C1: 1, A1: 1).
    assert _rows(s.targets, cols) == [
        ("u1", "test", "F2", at(22), "Footwear", 8, 1, False, True),
        ("u2", "test", "C2", at(7), "Clothing", 2, 1, False, True),
        ("u4", "test", "A2", at(41), "Accessories & Jewelry", 1, 0, True, False),
        ("u1", "val", "C1", at(12), "Clothing", 5, 1, False, True),
    ]
    assert s.targets["moment_items"].tolist() == [["F2"], ["C2"], ["A1", "A2"], ["C1"]]
    assert s.split("val")["user_id"].tolist() == ["u1"]
    assert "u2" not in set(s.split("val")["user_id"])  # a single purchase gives no validation row
    assert "u3" not in set(s.targets["user_id"])


def test_training_events_precede_each_users_first_target(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    train = s.train_events
    # u1: the 5 events before the val purchase (minute 12); u2: 2 before its test purchase; u3: all its events
    # (no purchase, still training data); u4: only the click before its purchase moment.
    assert _rows(train.sort_values(["user_id", "timestamp"], kind="stable"), ["user_id", "timestamp", "action"]) == [
        ("u1", at(0), "search"), ("u1", at(1), "click"), ("u1", at(2), "purchase"),
        ("u1", at(10), "search"), ("u1", at(11), "click"),
        ("u2", at(5), "search"), ("u2", at(6), "click"),
        ("u3", at(3), "click"), ("u3", at(30), "click"),
        ("u4", at(40), "click"),
    ]  # fmt: skip
    first_target = s.targets.groupby("user_id")["target_ts"].min()
    with_target = train[train["user_id"].isin(first_target.index)]
    assert (with_target["timestamp"] < with_target["user_id"].map(first_target)).all()
    assert "pos" not in train.columns
    assert sorted(s.train_items) == ["A1", "C1", "C2", "F1", "F3"]


def test_ties_keep_file_order(tiny_tables: CanonicalTables) -> None:
    # Swap u4's two same-minute purchases in the file: the test target follows the file, not the item id.
    ev = tiny_tables.events
    swapped = pd.concat([ev.iloc[:15], ev.iloc[[16, 15]]], ignore_index=True)
    s = leave_one_out(swapped, tiny_tables.items)
    u4 = s.targets[s.targets["user_id"] == "u4"]
    assert u4.set_index("split")["target_item_id"].to_dict() == {"test": "A1"}
    assert u4["moment_items"].tolist() == [["A2", "A1"]]
    # Time comes before file order: a shuffled table (that keeps A1's row before A2's) gives the same order.
    shuffled = ordered_events(ev.iloc[[15, 3, 16, 0, 8, 14, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13]])
    assert _rows(shuffled, ["user_id", "timestamp", "item_id"]) == _rows(
        ordered_events(ev), ["user_id", "timestamp", "item_id"]
    )
    assert shuffled.groupby("user_id")["pos"].max().to_dict() == {"u1": 8, "u2": 2, "u3": 1, "u4": 2}


def test_cross_category(tiny_tables: CanonicalTables) -> None:
    s = leave_one_out(tiny_tables.events, tiny_tables.items)
    x = cross_category(s, tiny_tables.items, train_category="Footwear", test_category="Clothing")
    assert isinstance(x, Splits)
    # Training keeps all searches (u1 x2, u2 x1) and only Footwear clicks/purchases (u1: F1 x2; u3: F1, F3).
    inter = x.train_events[x.train_events["action"] != "search"]
    assert sorted(inter["item_id"]) == ["F1", "F1", "F1", "F3"]
    assert (x.train_events["action"] == "search").sum() == 3
    # Targets: only the Clothing ones. Cold-start stays measured at the target's time (someone clicked C1 and C2
    # before), whatever the training events keep.
    assert _rows(x.targets, ["user_id", "split", "target_item_id", "cold_start"]) == [
        ("u2", "test", "C2", False),
        ("u1", "val", "C1", False),
    ]
    assert x.protocol == s.protocol == "loo"


# --- the temporal protocol ---------------------------------------------------------------------------------------

CUTS = {"val": at(10), "test": at(20)}


def test_temporal_split_targets_and_training(tiny_tables: CanonicalTables) -> None:
    s = temporal_split(tiny_tables.events, tiny_tables.items, cuts=CUTS)
    assert s.protocol == "temporal" and s.cuts == CUTS
    # Purchases: u1 F1 @2 (training period), C1 @12 (validation window), F2 @22 (test window); u2 C2 @7 (training);
    # u4 A1 and A2 @41 (test window: the last one, A2, is the target).
    cols = ["user_id", "split", "target_item_id", "target_ts", "n_history", "n_prior", "cold_start", "warm_rare"]
    assert _rows(s.targets, cols) == [
        ("u1", "test", "F2", at(22), 8, 1, False, True),
        ("u4", "test", "A2", at(41), 1, 0, True, False),
        ("u1", "val", "C1", at(12), 5, 1, False, True),
    ]
    # Training: every event before the validation cut, whoever made it: u1 @0-2, u2 @5-7, u3 @3.
    assert sorted(_rows(s.train_events, ["user_id", "timestamp"])) == [
        ("u1", at(0)), ("u1", at(1)), ("u1", at(2)), ("u2", at(5)), ("u2", at(6)), ("u2", at(7)), ("u3", at(3)),
    ]  # fmt: skip
    cut = training_cutoffs(s, tiny_tables.events)
    assert set(cut["user_id"]) == {"u1", "u2", "u3", "u4"} and (cut["cutoff_ts"] == CUTS["val"]).all()


def test_refit_times_and_fit_index() -> None:
    t = pd.Timestamp("2024-03-01", tz="UTC")
    day = pd.Timedelta(days=1)
    # A 20-day test window refitted weekly: starts at +0, +7, +14 (+21 is after the last target).
    assert refit_times(t, t + 20 * day, 7) == (t, t + 7 * day, t + 14 * day)
    assert refit_times(t, t + 14 * day, 7) == (t, t + 7 * day, t + 14 * day)  # a target at a start gets that fit
    assert refit_times(t, t + 20 * day, 0) == (t,)  # 0: one fit at the test cut
    with pytest.raises(ValueError, match="must be >= 0"):
        refit_times(t, t + day, -1)
    starts = refit_times(t, t + 20 * day, 7)
    times = pd.Series([t, t + 6 * day, t + 7 * day, t + 20 * day, t - day])
    assert fit_index(times, starts).tolist() == [0, 0, 1, 2, 0]  # the latest start at or before; before all: 0
    assert fit_index(times, (t,)).tolist() == [0] * 5


def test_rolling_refits_recorded_and_warm_rare_per_refit(tiny_tables: CanonicalTables, tmp_path: Path) -> None:
    """u5 buys F3 @42, which u3 clicked @30. Refits every 10 minutes from the test cut @20 start at @20, @30 and @40:
    F3 @42 is scored by the fit at @40, which saw that click, so at min_count 1 F3 is not rare; with one refit at
    the test cut it is (no interaction before @20)."""
    extra = pd.DataFrame([("u5", 8, at(42), "purchase", "F3", None, pd.NA)], columns=tiny_tables.events.columns)
    events = pd.concat([tiny_tables.events, extra.astype(tiny_tables.events.dtypes)], ignore_index=True)
    ten_minutes = 10 / (24 * 60)
    rolling = temporal_split(events, tiny_tables.items, cuts=CUTS, min_count=1, refit_every_days=ten_minutes)
    once = temporal_split(events, tiny_tables.items, cuts=CUTS, min_count=1)
    assert rolling.refits == (at(20), at(30), at(40)) and once.refits == ()
    rare = {s: dict(zip(x.split("test")["target_item_id"], x.split("test")["warm_rare"], strict=True))
            for s, x in (("rolling", rolling), ("once", once))}
    assert rare == {"rolling": {"F2": True, "A2": False, "F3": False}, "once": {"F2": True, "A2": False, "F3": True}}
    lay = Layout(tmp_path)
    write_splits(rolling, lay.splits)
    assert read_refits(lay.splits) == rolling.refits and read_splits(lay.splits).refits == rolling.refits
    # The layouts of the three fits: the first two under models/refits/<k>/, the last is the served models/<name>.pt.
    fits = fit_layouts(lay)
    assert [t for t, _ in fits] == list(rolling.refits)
    assert [lay.model("core-trm").relative_to(lay.root).as_posix() for _, lay in fits] == [
        "models/refits/0/core-trm.pt", "models/refits/1/core-trm.pt", "models/core-trm.pt"]
    assert lay.refit(2).train_history.relative_to(tmp_path).as_posix() == "seqrec/refits/2/train_history.parquet"
    assert fit_layouts(lay.at("val")) == [(None, lay.at("val"))]  # the val period: one fit


def test_temporal_default_cuts_are_the_last_tenths_of_the_span(tiny_tables: CanonicalTables) -> None:
    cuts = temporal_cuts(tiny_tables.events)  # span @0..@41
    assert cuts == {"val": at(32) + pd.Timedelta(seconds=48), "test": at(36) + pd.Timedelta(seconds=54)}  # -8.2, -4.1 min
    with pytest.raises(ValueError, match="val_frac"):
        temporal_cuts(tiny_tables.events, 0.5, 0.5)
    with pytest.raises(ValueError, match="protocol"):
        make_splits(tiny_tables.events, tiny_tables.items, "random")


def _with_future(tables: CanonicalTables) -> CanonicalTables:
    """The tiny set plus a new user u5 who, AFTER u1's test target (@22), searches "sneakers", sees F2 first, clicks
    F2 three times and buys A2: events that would teach a model about F2 and A2 if the future leaked."""
    ev = pd.DataFrame([
        ("u5", 9, at(30), "search", None, "sneakers", 9),
        *[("u5", 9, at(31 + i), "click", "F2", None, None) for i in range(3)],
        ("u5", 9, at(35), "click", "A2", None, None),
    ], columns=["user_id", "session_id", "timestamp", "action", "item_id", "query", "search_id"])  # fmt: skip
    ev = ev.astype({"timestamp": "datetime64[ms, UTC]", "search_id": "Int64"})
    sr = pd.DataFrame([(9, "u5", 9, "sneakers", at(30), item, pos) for pos, item in enumerate(["F2", "F1"], 1)],
                      columns=list(tables.search_results.columns)).astype({"timestamp": "datetime64[ms, UTC]"})
    return CanonicalTables(items=tables.items, events=pd.concat([tables.events, ev], ignore_index=True),
                           search_results=pd.concat([tables.search_results, sr], ignore_index=True))


def test_later_events_by_other_users_change_nothing_under_the_temporal_protocol(tiny_tables: CanonicalTables) -> None:
    from evaluation.baselines import PopularityConfig, PopularityScorer
    from models.catalog import Catalog
    from models.seqrec.vocab import ItemVocab
    from models.text import HashingNgramEncoder, build_pairs
    from models.text.memory import AsOfMemory

    future = _with_future(tiny_tables)

    def inter(events: pd.DataFrame) -> list[str]:
        return events.loc[events["action"].isin(["click", "purchase"]), "item_id"].tolist()

    def everything(t: CanonicalTables, protocol: str) -> dict:
        s = make_splits(t.events, t.items, protocol) if protocol == "loo" else temporal_split(t.events, t.items,
                                                                                               cuts=CUTS)
        target = s.targets[(s.targets["user_id"] == "u1") & (s.targets["split"] == "test")]
        catalog = Catalog.from_items(t.items)
        pop = PopularityScorer(t.events, catalog, PopularityConfig(window_days=None))(target, catalog.rows["Footwear"])
        enc = HashingNgramEncoder()
        hits = AsOfMemory.build(t.search_results, enc).lookup_queries(["sneakers"], target["target_ts"].to_numpy())
        return {
            "train_events": _rows(s.train_events, ["user_id", "timestamp", "action", "item_id"]),
            "vocab": ItemVocab.from_items(inter(s.train_events), min_count=1).to_list(),
            "title_pairs": _rows(build_pairs(s.train_events, t.search_results), ["query", "item_id"]),
            "target": _rows(target, ["target_item_id", "target_ts", "n_prior", "cold_start", "warm_rare"]),
            "popularity": pop.tolist(),
            "memory": [(h.query, h.products, h.scores) for h in hits[0]],
        }

    before, after = everything(tiny_tables, "temporal"), everything(future, "temporal")
    for key in before:
        assert before[key] == after[key], key
    # The same events do leak into leave-one-out's training data (u5 has no purchase, so all of it is training):
    # the ID vocabulary learns F2 and A2 from after u1's target. Hence the temporal protocol is the default.
    loo_before, loo_after = everything(tiny_tables, "loo"), everything(future, "loo")
    assert "F2" not in loo_before["vocab"] and {"F2", "A2"} <= set(loo_after["vocab"])
    # The cold flag is at the target's time under both protocols; "warm but rare in training" is not, under LOO.
    assert [r[:4] for r in loo_before["target"]] == [r[:4] for r in loo_after["target"]]
    assert loo_before["target"][0][4] and not loo_after["target"][0][4]


def test_write_and_read_splits_round_trip(tiny_tables: CanonicalTables, tmp_path) -> None:  # noqa: ANN001
    s = temporal_split(tiny_tables.events, tiny_tables.items, cuts=CUTS)
    write_splits(s, tmp_path / "splits")
    back = read_splits(tmp_path / "splits")
    assert back.protocol == "temporal" and back.cuts == CUTS
    pd.testing.assert_frame_equal(back.targets, s.targets)
    assert read_protocol(tmp_path / "nothing") == ("loo", {})


def test_the_test_fit_learns_from_everything_before_the_test_targets(tiny_tables: CanonicalTables) -> None:
    """Temporal: the refit's events reach the test cut, so they hold the validation period (u1's C1 @11-12), which
    the val fit's do not. Leave-one-out: each user's events before their test moment (u1's val purchase included)."""
    ev = tiny_tables.events
    s = temporal_split(ev, tiny_tables.items, cuts=CUTS)
    assert training_events(s, ev, "val") is s.train_events
    refit = training_events(s, ev, "test")
    assert sorted(_rows(refit, ["user_id", "timestamp"])) == [
        ("u1", at(0)), ("u1", at(1)), ("u1", at(2)), ("u1", at(10)), ("u1", at(11)), ("u1", at(12)),
        ("u2", at(5)), ("u2", at(6)), ("u2", at(7)), ("u3", at(3)),
    ]  # fmt: skip
    assert (training_cutoffs(s, ev, "test")["cutoff_ts"] == CUTS["test"]).all()
    loo = leave_one_out(ev, tiny_tables.items)
    cut = training_cutoffs(loo, ev, "test").set_index("user_id")["cutoff_ts"].to_dict()
    assert cut == {"u1": at(22), "u2": at(7), "u4": at(41), "u3": at(30) + pd.Timedelta(milliseconds=1)}
    got = training_events(loo, ev, "test").groupby("user_id")["timestamp"].agg(["size", "max"])
    assert got.to_dict("index") == {"u1": {"size": 8, "max": at(21)}, "u2": {"size": 2, "max": at(6)},
                                    "u3": {"size": 2, "max": at(30)}, "u4": {"size": 1, "max": at(40)}}
    with pytest.raises(ValueError, match="unknown period"):
        training_cutoffs(loo, ev, "train")  # type: ignore[arg-type]


def test_warm_rare_counts_the_training_events_of_the_fit_that_scores_the_target(tiny_tables: CanonicalTables) -> None:
    # Leave-one-out, min_count 1: u1's test target F2 was clicked by u1 @21, before the test moment (the refit
    # sees it, the val fit does not), so it has a row of its own in the refit: not rare. C2 (u2's click @6) and the
    # validation target C1 (u1's click @11, before the val moment) likewise; A2 is cold.
    s = leave_one_out(tiny_tables.events, tiny_tables.items, min_count=1)
    assert _rows(s.targets, ["target_item_id", "cold_start", "warm_rare"]) == [
        ("F2", False, False), ("C2", False, False), ("A2", True, False), ("C1", False, False)]
    # At min_count 2 each is seen once by its fit: rare.
    s2 = leave_one_out(tiny_tables.events, tiny_tables.items, min_count=2)
    assert s2.targets["warm_rare"].tolist() == [True, True, False, True]


def test_training_user_mask_is_a_seeded_nested_share() -> None:
    users = pd.Series([f"user{i}" for i in range(20_000)])
    masks = {s: training_user_mask(users, s, seed=3) for s in (0.1, 0.25, 0.5, 1.0)}
    assert masks[1.0].all()
    for small, large in ((0.1, 0.25), (0.25, 0.5), (0.5, 1.0)):
        assert not (masks[small] & ~masks[large]).any()  # nested: in at 10% means in at 25%
        assert abs(masks[small].mean() - small) < 0.015
    assert (training_user_mask(users, 0.25, seed=3) == masks[0.25]).all()  # deterministic
    assert (training_user_mask(users, 0.25, seed=4) != masks[0.25]).any()  # the seed matters
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        training_user_mask(users, 0.0)


def test_with_training_users_keeps_every_test_target() -> None:
    """Leave-one-out on the tiny data (u1 has the one validation target): at a share that leaves u1 out, the
    validation targets and u1's training events go; the other users' training events and every test target stay."""
    tables = make_tiny_tables()
    s = leave_one_out(tables.events, tables.items)
    users = pd.Series(["u1", "u2", "u3", "u4"])
    seed = next(k for k in range(100) if not training_user_mask(users, 0.5, k)[0]
                and training_user_mask(users, 0.5, k).any())
    keep = set(users[training_user_mask(users, 0.5, seed)])
    out = with_training_users(s, 0.5, seed)
    assert out.split("test").equals(s.split("test")) and len(out.split("test")) == 3
    assert set(s.split("val")["user_id"]) == {"u1"} and out.split("val").empty
    assert set(out.train_events["user_id"]) == set(s.train_events["user_id"]) & keep != set()
    assert "u1" in set(s.train_events["user_id"]) - set(out.train_events["user_id"])
    assert with_training_users(s, 1.0) is s


def test_with_test_sample_keeps_a_seeded_share_of_the_test_targets_only(tmp_path: Path) -> None:
    """Leave-one-out on the tiny data: 3 test targets and 1 validation target. At most 2 test targets: 2 of the 3,
    in their order, the same 2 for the same seed; the validation target and the training events are untouched; at 0
    or at 3 and over, nothing is cut. The note the splits folder keeps names the whole count."""
    tables = make_tiny_tables()
    s = leave_one_out(tables.events, tables.items)
    out, n = with_test_sample(s, 2)
    test, kept = s.split("test"), out.split("test")
    assert n == 3 and len(kept) == 2
    rows = _rows(test, ["user_id", "target_item_id"])
    got = _rows(kept, ["user_id", "target_item_id"])
    assert set(got) < set(rows) and got == [r for r in rows if r in got]  # a subset, in order
    assert _rows(with_test_sample(s, 2)[0].split("test"), ["user_id", "target_item_id"]) == got  # seeded
    picks = {tuple(_rows(with_test_sample(s, 1, seed)[0].split("test"), ["user_id"])) for seed in range(20)}
    assert len(picks) > 1  # the seed chooses
    assert out.split("val").equals(s.split("val")) and out.train_events.equals(s.train_events)
    for cap in (0, 3, 4):
        same, n = with_test_sample(s, cap)
        assert same is s and n == 3
    with pytest.raises(ValueError, match="max_targets"):
        with_test_sample(s, -1)
    write_splits(out, tmp_path)
    assert held_out_phrase(tmp_path, 2) == "2 test targets"  # nothing recorded: no sample named
    record_test_sample(tmp_path, 2, 3, 0)
    assert held_out_phrase(tmp_path, 2) == "2 test targets (a seeded sample of 3)"
    assert held_out_phrase(tmp_path / "nowhere", 1_500) == "1,500 test targets"


def test_seeded_positions_is_a_sorted_seeded_sample_or_every_row() -> None:
    """k of n distinct positions, ascending, the same for a seed and different across seeds; every row at k = 0 or
    k >= n. The seeded sample is numpy's `Generator.choice` without replacement, so the caps that use it draw what
    they drew before it was shared."""
    import numpy as np

    a = seeded_positions(1_000, 30, seed=0)
    assert len(a) == len(set(a.tolist())) == 30 and (np.diff(a) > 0).all() and 0 <= a.min() and a.max() < 1_000
    np.testing.assert_array_equal(a, seeded_positions(1_000, 30, seed=0))
    np.testing.assert_array_equal(a, np.sort(np.random.default_rng(0).choice(1_000, 30, replace=False)))
    assert len({tuple(seeded_positions(1_000, 30, seed).tolist()) for seed in range(5)}) == 5
    for k in (0, 7, 8):
        np.testing.assert_array_equal(seeded_positions(7, k, seed=3), np.arange(7))
    frame = pd.DataFrame({"t": np.arange(100) * 10}, index=np.arange(100) + 500)
    got = sample_rows(frame, 30, seed=0)  # those positions' rows, in order, renumbered
    assert got["t"].tolist() == (seeded_positions(100, 30, 0) * 10).tolist() and got.index.tolist() == list(range(30))
    assert sample_rows(frame, 0, seed=0) is frame and sample_rows(frame, 100, seed=0) is frame
