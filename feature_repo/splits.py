"""Evaluation splits on purchases: a global temporal protocol (default) and the paper's leave-one-out.

- `temporal_split` (protocol "temporal"): two global cut dates, by default the last 10% of the time span for test
  and the 10% before it for validation. Test targets are each user's last purchase at or after the test cut,
  validation targets each user's last purchase between the cuts. Training data is every event before the
  validation cut, for every user: no model, vocabulary, memory or ranker sees anything from the evaluation period.
- `leave_one_out` (protocol "loo", the paper's and RecBole's): per user, the last purchase moment gives the test
  target and the moment before it the validation target; every event before the user's first held-out moment is
  training data.
  There is no global cut, so training holds other users' events from after a target's time: keep it for
  comparability with the paper, not as the measure of record.

Under both, order is by timestamp, then by event order in the canonical table (never by item ID). A moment is
(user, timestamp) at the data's own resolution (`feature_repo.moments`: on day-resolution data a user's day). A
target is the last purchase, in file order, of a moment; its history is every event strictly before its moment, so
nothing at the target's moment (the rest of a day's basket) is history. `moment_items` lists every distinct item the
user bought at the target's moment, the target first among equals in file order as bought (it is what the basket hit
rate reads). Leave-one-out takes each user's last two purchase moments, so the validation target is never a
basket-mate of the test target. `cold_start` is measured at the target's time: the item is cold when no one clicked
or purchased it strictly before the target's timestamp (`n_prior` counts those interactions).
`warm_rare` marks targets that are warm but occur fewer than `min_count` times in the training events of the fit
that scores them (below), so the ID models' vocabulary maps them to the shared cold row too.

Two fits. Models are first fitted on `train_events`, everything before the validation targets: that *val* fit
selects the settings (epochs by early stopping on the validation targets) and scores the validation targets that
the variant ranker, the learned ranker and the LLM are trained on. Then the ID and title models are refitted with
those settings on everything before the test targets (`training_events(..., "test")`: under the temporal protocol
every event before the test cut, the validation period included; under leave-one-out each user's events before
their test moment). That *test* fit scores the test targets and is what a serving bundle holds, as a nightly
retrain would be. `training_cutoffs` gives each fit's per-user cut.

Rolling refits (temporal protocol, `refit_every_days` > 0). One refit at the test cut leaves the ID model blind to
every item that starts selling during the test window, which production would not be: it retrains nightly or weekly.
So the test window is cut into periods of `refit_every_days` from the test cut (`refit_times`); the ID model is
refitted (warm-started from the previous refit) at each period's start, on every event before it, and each test
target is scored by the latest refit at or before its time (`fit_index`). The serving bundle holds the last one.
The times are recorded in `protocol.json` (`refits`), and `warm_rare` counts a test target's training interactions
before its own refit's time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from feature_repo.layout import PERIODS, Layout, Period

INTERACTIONS = ("click", "purchase")
Protocol = Literal["temporal", "loo"]
PROTOCOLS: tuple[str, ...] = ("temporal", "loo")
DEFAULT_MIN_COUNT = 2  # the ID models' vocabulary threshold (TrainingResource.min_count)
DEFAULT_REFIT_DAYS = 7.0  # temporal: the ID model is refitted weekly through the test window (0: once, at the test cut)
ROLLING_EPOCHS = 2  # epochs of each warm-started rolling refit (it continues from the previous week's model)
# Evaluation scores every test target against its whole category, so its cost is targets x catalog: with both
# growing with the data it would grow with the data's square. A seeded sample of at most this many test targets
# keeps it linear in the catalog (`with_test_sample`; 0: every target). 3,000 is above medium-s0's 2,849 test targets;
# it measures N@10 to about +-0.01 (the paper report prints each row's bootstrap interval).
DEFAULT_MAX_TEST_TARGETS = 3_000


@dataclass(frozen=True)
class Splits:
    """`targets`: one row per held-out purchase; `train_events`: the events every model may learn from."""

    targets: pd.DataFrame  # user_id, split, target_item_id, target_ts, category, n_history, moment_items, n_prior, ...
    train_events: pd.DataFrame
    protocol: str = "loo"
    cuts: dict[str, pd.Timestamp] = field(default_factory=dict)  # temporal: {"val": ..., "test": ...}
    refits: tuple[pd.Timestamp, ...] = ()  # temporal: each test-period fit's start (`refit_times`); () for one fit

    def split(self, name: str) -> pd.DataFrame:
        return self.targets[self.targets["split"] == name].reset_index(drop=True)

    @property
    def train_items(self) -> pd.Index:
        """Items that occur (clicked or purchased) in the training events."""
        inter = self.train_events[self.train_events["action"].isin(INTERACTIONS)]
        return pd.Index(inter["item_id"].unique())

    def describe(self) -> dict:
        """Protocol and cut dates as JSON-able values (written beside the split tables)."""
        out: dict = {"protocol": self.protocol, "cuts": {k: v.isoformat() for k, v in self.cuts.items()}}
        if len(self.refits) > 1:
            out["refits"] = [t.isoformat() for t in self.refits]
        return out


def refit_times(test_cut: pd.Timestamp, last_target: pd.Timestamp, every_days: float) -> tuple[pd.Timestamp, ...]:
    """The start of each test-period fit: the test cut, then every `every_days` while a test target can still fall
    in the period (the last start is at or before `last_target`). `every_days` 0: the test cut alone."""
    if every_days < 0:
        raise ValueError(f"refit_every_days must be >= 0, got {every_days}")
    if every_days == 0 or last_target < test_cut:
        return (test_cut,)
    n = int((last_target - test_cut) // pd.Timedelta(days=every_days)) + 1
    return tuple(test_cut + pd.Timedelta(days=every_days * k) for k in range(n))


def fit_index(times: pd.Series | np.ndarray, starts: tuple[pd.Timestamp, ...] | list[pd.Timestamp]) -> np.ndarray:
    """(n,) index of the fit that scores a target at each time: the latest start at or before it (0 for a time before
    every start, and for no starts at all)."""
    if len(starts) <= 1:
        return np.zeros(len(times), np.int64)
    q = pd.DatetimeIndex(pd.to_datetime(pd.Series(np.asarray(times)), utc=True)).as_unit("ns").asi8
    s = pd.DatetimeIndex(pd.to_datetime(pd.Series(list(starts)), utc=True)).as_unit("ns").asi8
    return np.maximum(np.searchsorted(s, q, side="right") - 1, 0).astype(np.int64)


def ordered_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events sorted per user by (timestamp, canonical event order), with `pos` = position within the user."""
    ev = events.reset_index(drop=True)
    ev = ev.assign(_order=np.arange(len(ev))).sort_values(["user_id", "timestamp", "_order"], kind="stable")
    ev = ev.drop(columns="_order").reset_index(drop=True)
    return ev.assign(pos=ev.groupby("user_id").cumcount())


def prior_interactions(events: pd.DataFrame, item_ids: pd.Series | np.ndarray, times: pd.Series | np.ndarray
                       ) -> np.ndarray:
    """Per (item, time): clicks + purchases of that item by anyone strictly before that time. (n,) int64."""
    inter = events[events["action"].isin(INTERACTIONS)]
    t = pd.DatetimeIndex(pd.to_datetime(inter["timestamp"], utc=True)).as_unit("ns").asi8
    by_item = pd.Series(t).groupby(inter["item_id"].to_numpy()).apply(lambda s: np.sort(s.to_numpy()))
    q = pd.DatetimeIndex(pd.to_datetime(pd.Series(np.asarray(times)), utc=True)).as_unit("ns").asi8
    empty = np.zeros(0, np.int64)
    return np.array([np.searchsorted(by_item.get(i, empty), tq, side="left")
                     for i, tq in zip(np.asarray(item_ids), q, strict=True)], dtype=np.int64)


def moment_items(events: pd.DataFrame, users: pd.Series | np.ndarray, times: pd.Series | np.ndarray
                 ) -> list[list[str]]:
    """Per (user, time): the distinct items the user purchased at exactly that time, in event order."""
    key = pd.DataFrame({"user_id": np.asarray(users, dtype=object),
                        "timestamp": pd.to_datetime(pd.Series(np.asarray(times)), utc=True).astype("datetime64[ms, UTC]")})
    bought = events.loc[events["action"] == "purchase", ["user_id", "timestamp", "item_id"]]
    bought = bought.assign(timestamp=pd.to_datetime(bought["timestamp"], utc=True).astype("datetime64[ms, UTC]"))
    bought = bought.merge(key.drop_duplicates(), on=["user_id", "timestamp"], how="inner", sort=False)
    baskets = {k: list(dict.fromkeys(g.tolist())) for k, g in bought.groupby(["user_id", "timestamp"], sort=False)["item_id"]}
    return [baskets.get((u, t), []) for u, t in zip(key["user_id"], key["timestamp"], strict=True)]


def _targets(held: pd.DataFrame, events: pd.DataFrame, fit_events: dict[str, pd.DataFrame], items: pd.DataFrame,
             min_count: int, refits: tuple[pd.Timestamp, ...] = ()) -> pd.DataFrame:
    """The targets table from held-out purchase rows (with `n_before` and `split`); `fit_events`: per split, the
    training events of the fit that scores its targets (for `warm_rare`); with rolling `refits`, a test target's
    training events are every event before its refit's start instead."""
    category = items.set_index("item_id")["category"]
    targets = pd.DataFrame({
        "user_id": held["user_id"].to_numpy(),
        "split": held["split"].to_numpy(),
        "target_item_id": held["item_id"].to_numpy(),
        "target_ts": held["timestamp"].to_numpy(),
        "category": held["item_id"].map(category).to_numpy(),
        "n_history": held["n_before"].to_numpy(),
    })
    targets["moment_items"] = moment_items(events, targets["user_id"], targets["target_ts"])
    targets["n_prior"] = prior_interactions(events, targets["target_item_id"], targets["target_ts"])
    targets["cold_start"] = targets["n_prior"] == 0
    n_train = np.zeros(len(targets), np.int64)
    for split, fit in fit_events.items():
        inter = fit[fit["action"].isin(INTERACTIONS)]
        rows = (targets["split"] == split).to_numpy()
        n_train[rows] = targets.loc[rows, "target_item_id"].map(inter["item_id"].value_counts()).fillna(0)
    if len(refits) > 1:
        test = (targets["split"] == "test").to_numpy()
        start = np.asarray(refits)[fit_index(targets.loc[test, "target_ts"], refits)]
        n_train[test] = prior_interactions(events, targets.loc[test, "target_item_id"], start)
    targets["warm_rare"] = ~targets["cold_start"] & (n_train < min_count)
    return targets.sort_values(["split", "user_id"], kind="stable").reset_index(drop=True)


def _with_n_before(events: pd.DataFrame) -> pd.DataFrame:
    ev = ordered_events(events)
    # Events strictly before an event's timestamp: ties at the same timestamp are not history (see features.py).
    ev["n_before"] = ev.groupby(["user_id", "timestamp"])["pos"].transform("min")
    return ev


def leave_one_out(events: pd.DataFrame, items: pd.DataFrame, min_count: int = DEFAULT_MIN_COUNT) -> Splits:
    """Per-user leave-one-out targets and training events (see the module docstring)."""
    ev = _with_n_before(events)
    purchases = ev[ev["action"] == "purchase"]
    # The last purchase (file order) of each purchase moment, and the moment's rank from the user's last one.
    last_of_moment = purchases.groupby(["user_id", "timestamp"], sort=False).tail(1)
    moment_from_end = last_of_moment.groupby("user_id").cumcount(ascending=False)  # pos increases with time
    held = last_of_moment[moment_from_end < 2]
    held = held.assign(split=np.where(moment_from_end[moment_from_end < 2] == 0, "test", "val"))
    # Training is every event before the user's first held-out MOMENT (not just before its target row).
    first_moment_start = held.groupby("user_id")["n_before"].min()
    cutoff = ev["user_id"].map(first_moment_start)
    train_events = ev[cutoff.notna() & (ev["pos"] < cutoff)].reset_index(drop=True)
    # Users who never purchase have no target; their events are still training data for the sequence models.
    train_events = pd.concat([train_events, ev[cutoff.isna()]], ignore_index=True)
    test_start = held[held["split"] == "test"].groupby("user_id")["n_before"].min()
    test_cut = ev["user_id"].map(test_start)
    refit_events = ev[test_cut.isna() | (ev["pos"] < test_cut)]
    targets = _targets(held, ev, {"val": train_events, "test": refit_events}, items, min_count)
    return Splits(targets=targets, train_events=train_events.drop(columns=["pos", "n_before"]), protocol="loo")


def temporal_cuts(events: pd.DataFrame, val_frac: float = 0.1, test_frac: float = 0.1) -> dict[str, pd.Timestamp]:
    """The validation and test cut dates: the last `test_frac` of the time span, and the `val_frac` before it."""
    if not (0 < test_frac < 1 and 0 < val_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"need 0 < val_frac, test_frac and val_frac + test_frac < 1, got {val_frac}, {test_frac}")
    ts = pd.to_datetime(events["timestamp"], utc=True)
    t0, t1 = ts.min(), ts.max()
    span = t1 - t0
    # Rounded to the millisecond, the resolution of canonical timestamps.
    return {"val": (t1 - span * (val_frac + test_frac)).round("ms"), "test": (t1 - span * test_frac).round("ms")}


def temporal_split(events: pd.DataFrame, items: pd.DataFrame, val_frac: float = 0.1, test_frac: float = 0.1,
                   cuts: dict[str, pd.Timestamp] | None = None, min_count: int = DEFAULT_MIN_COUNT,
                   refit_every_days: float = 0) -> Splits:
    """Global temporal targets and training events (see the module docstring); `cuts` overrides the fractions;
    `refit_every_days` > 0: rolling refits through the test window (`refit_times`)."""
    cuts = {k: pd.Timestamp(v) for k, v in (cuts or temporal_cuts(events, val_frac, test_frac)).items()}
    cuts = {k: v.tz_localize("UTC") if v.tzinfo is None else v.tz_convert("UTC") for k, v in cuts.items()}
    if cuts["val"] >= cuts["test"]:
        raise ValueError(f"the validation cut {cuts['val']} must be before the test cut {cuts['test']}")
    ev = _with_n_before(events)
    ts = pd.to_datetime(ev["timestamp"], utc=True)
    purchases = ev[ev["action"] == "purchase"]
    p_ts = ts[purchases.index]
    window = np.where(p_ts >= cuts["test"], "test", np.where(p_ts >= cuts["val"], "val", ""))
    purchases = purchases.assign(split=window)
    purchases = purchases[purchases["split"] != ""]
    # Each user's last purchase in each window (pos is increasing in time within a user): the last purchase, in
    # file order, of the user's last moment in the window.
    held = purchases.groupby(["user_id", "split"], sort=False).tail(1)
    train_events = ev[ts < cuts["val"]].reset_index(drop=True)
    last = pd.to_datetime(held.loc[held["split"] == "test", "timestamp"], utc=True).max()
    refits = refit_times(cuts["test"], cuts["test"] if pd.isna(last) else last, refit_every_days)
    targets = _targets(held, ev, {"val": train_events, "test": ev[ts < cuts["test"]]}, items, min_count, refits)
    return Splits(targets=targets, train_events=train_events.drop(columns=["pos", "n_before"]), protocol="temporal",
                  cuts=cuts, refits=refits if len(refits) > 1 else ())


def make_splits(events: pd.DataFrame, items: pd.DataFrame, protocol: str = "temporal", *, val_frac: float = 0.1,
                test_frac: float = 0.1, min_count: int = DEFAULT_MIN_COUNT, refit_every_days: float = 0) -> Splits:
    """The splits of one protocol: "temporal" (global cut dates; `refit_every_days`: rolling refits through the
    test window) or "loo" (the paper's leave-one-out, one refit)."""
    if protocol == "temporal":
        return temporal_split(events, items, val_frac, test_frac, min_count=min_count,
                              refit_every_days=refit_every_days)
    if protocol == "loo":
        return leave_one_out(events, items, min_count=min_count)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")


def training_user_mask(user_ids: pd.Series | np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """(n,) True for the users whose data trains the models: all of them at `share` 1, else a seeded `share` of them
    (each user in or out by a hash of their id, so a user is in at 10% only if in at 25%, 50%, ...: the shares are
    nested for the same seed). The paper's low-resource setting."""
    if not 0 < share <= 1:
        raise ValueError(f"the share of training users must be in (0, 1], got {share}")
    ids = pd.Series(np.asarray(user_ids), dtype=object).astype(str)
    if share == 1:
        return np.ones(len(ids), bool)
    h = pd.util.hash_pandas_object(ids + f"#{seed}", index=False).to_numpy()
    return (h % 1_000_000) < round(share * 1_000_000)


def with_training_users(splits: Splits, share: float, seed: int = 0) -> Splits:
    """`splits` with its training events and validation targets (what the rankers and the LLM train on) limited to
    `training_user_mask`'s users; the test targets are every user's, with their whole histories."""
    if share == 1:
        return splits
    t = splits.targets
    keep = (t["split"] == "test").to_numpy() | training_user_mask(t["user_id"], share, seed)
    ev = splits.train_events
    return Splits(targets=t[keep].reset_index(drop=True),
                  train_events=ev[training_user_mask(ev["user_id"], share, seed)].reset_index(drop=True),
                  protocol=splits.protocol, cuts=splits.cuts, refits=splits.refits)


def with_test_sample(splits: Splits, max_targets: int, seed: int = 0) -> tuple[Splits, int]:
    """`splits` with at most `max_targets` test targets: a seeded uniform sample of them, in their order (every one
    at `max_targets` 0 or when there are no more). The validation targets and training events are kept whole: they
    train models, and their cost is linear in the data. Also returns how many test targets there were."""
    if max_targets < 0:
        raise ValueError(f"max_targets must be >= 0 (0: every test target), got {max_targets}")
    t = splits.targets
    test = np.flatnonzero((t["split"] == "test").to_numpy())
    if max_targets == 0 or len(test) <= max_targets:
        return splits, len(test)
    keep = (t["split"] != "test").to_numpy()
    keep[test[seeded_positions(len(test), max_targets, seed)]] = True
    return replace(splits, targets=t[keep].reset_index(drop=True)), len(test)


def seeded_positions(n: int, k: int, seed: int) -> np.ndarray:
    """Ascending positions of a seeded uniform sample of `k` of `n` rows (every row where `k` is 0 or at least `n`):
    the one sampler behind every "at most k of them" cap (`with_test_sample`, the ranker's training targets)."""
    if k <= 0 or n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def sample_rows(frame: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """At most `k` rows of `frame`: a seeded uniform sample in their order (`seeded_positions`), or `frame` itself
    where `k` is 0 or it has no more rows. What caps the validation targets a stage fits on."""
    if k <= 0 or len(frame) <= k:
        return frame
    return frame.iloc[seeded_positions(len(frame), k, seed)].reset_index(drop=True)


def record_protocol(folder: Path, key: str, value: dict) -> None:
    """Set `key` in the splits folder's `protocol.json` (which `write_splits` wrote) to `value`."""
    path = folder / "protocol.json"
    d = json.loads(path.read_text())
    d[key] = value
    path.write_text(json.dumps(d, indent=2))


def record_test_sample(folder: Path, kept: int, of: int, seed: int) -> None:
    """Note in `protocol.json` how many of the test targets evaluation scores (`with_test_sample`)."""
    record_protocol(folder, "test_targets", {"kept": kept, "of": of, "seed": seed})


def held_out_phrase(folder: Path, n: int) -> str:
    """"2,849 test targets", or "3,000 test targets (a seeded sample of 11,396)" where `with_test_sample` cut them."""
    path = folder / "protocol.json"
    rec = json.loads(path.read_text()).get("test_targets", {}) if path.exists() else {}
    of = int(rec.get("of", n))
    return f"{n:,} test target{'' if n == 1 else 's'}" + (f" (a seeded sample of {of:,})" if of > n else "")


def cross_category(splits: Splits, items: pd.DataFrame, train_category: str, test_category: str) -> Splits:
    """Zero-shot split: train on `train_category` interactions (and all searches), test on `test_category` targets."""
    category = splits.train_events["item_id"].map(items.set_index("item_id")["category"])
    keep = (splits.train_events["action"] == "search") | (category == train_category)
    train_events = splits.train_events[keep].reset_index(drop=True)
    targets = splits.targets[splits.targets["category"] == test_category].reset_index(drop=True)
    return Splits(targets=targets, train_events=train_events, protocol=splits.protocol, cuts=splits.cuts,
                  refits=splits.refits)


def training_cutoffs(splits: Splits, events: pd.DataFrame, period: Period = "val") -> pd.DataFrame:
    """Per user, the time before which all events are training data of the `period` fit (see "Two fits").

    Temporal: that period's cut, for every user. Leave-one-out: the user's first target ("val") or test target
    ("test"), else after their last event. Columns user_id, cutoff_ts.
    """
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")
    if splits.protocol == "temporal":
        users = pd.Index(events["user_id"].unique())
        return pd.DataFrame({"user_id": users, "cutoff_ts": splits.cuts[period]})
    held = splits.targets if period == "val" else splits.targets[splits.targets["split"] == "test"]
    first = held.groupby("user_id")["target_ts"].min()
    others = events[~events["user_id"].isin(first.index)].groupby("user_id")["timestamp"].max()
    cut = pd.concat([first, others + pd.Timedelta(milliseconds=1)])
    return cut.rename("cutoff_ts").rename_axis("user_id").reset_index()


def training_events(splits: Splits, events: pd.DataFrame, period: Period = "val") -> pd.DataFrame:
    """The events the `period` fit learns from: each user's events strictly before their cut (`training_cutoffs`).
    For "val" these are `splits.train_events` (as rows of `events`)."""
    if period == "val":
        return splits.train_events
    cut = training_cutoffs(splits, events, period).set_index("user_id")["cutoff_ts"]
    limit = pd.to_datetime(events["user_id"].map(cut), utc=True)
    return events[(pd.to_datetime(events["timestamp"], utc=True) < limit).to_numpy()].reset_index(drop=True)


def write_splits(splits: Splits, folder: Path) -> None:
    """`targets.parquet`, `train_events.parquet` and `protocol.json` under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    splits.targets.to_parquet(folder / "targets.parquet", index=False)
    splits.train_events.to_parquet(folder / "train_events.parquet", index=False)
    (folder / "protocol.json").write_text(json.dumps(splits.describe(), indent=2))


def record_user_share(folder: Path, share: float, seed: int, kept: int, of: int) -> None:
    """Note in `protocol.json` which share of the users trained the models (`with_training_users`)."""
    record_protocol(folder, "training_users", {"share": share, "seed": seed, "users": kept, "of": of})


def read_user_share(folder: Path) -> float:
    """The share of users that trained the models (1 where none was recorded)."""
    path = folder / "protocol.json"
    d = json.loads(path.read_text()) if path.exists() else {}
    return float(d.get("training_users", {}).get("share", 1.0))


def read_protocol(folder: Path) -> tuple[str, dict[str, pd.Timestamp]]:
    """The protocol and cuts `write_splits` recorded (leave-one-out for folders written before it existed)."""
    path = folder / "protocol.json"
    if not path.exists():
        return "loo", {}
    d = json.loads(path.read_text())
    return d["protocol"], {k: pd.Timestamp(v) for k, v in d.get("cuts", {}).items()}


def read_refits(folder: Path) -> tuple[pd.Timestamp, ...]:
    """The test-period fits' start times `write_splits` recorded: () for one fit at the test cut."""
    path = folder / "protocol.json"
    d = json.loads(path.read_text()) if path.exists() else {}
    return tuple(pd.Timestamp(t) for t in d.get("refits", []))


def fit_layouts(layout: Layout) -> list[tuple[pd.Timestamp | None, Layout]]:
    """The test period's fits, oldest first, as (start, layout naming that fit's files): one `(None, layout)` without
    rolling refits. The last is always `layout` itself (`models/<name>.pt`, what a bundle serves); earlier ones are
    `layout.refit(k)` (`models/refits/<k>/`)."""
    starts = read_refits(layout.splits)
    if layout.period != "test" or len(starts) <= 1:
        return [(None, layout)]
    return [(t, layout if k == len(starts) - 1 else layout.refit(k)) for k, t in enumerate(starts)]


def read_splits(folder: Path) -> Splits:
    """Inverse of `write_splits`."""
    protocol, cuts = read_protocol(folder)
    return Splits(targets=pd.read_parquet(folder / "targets.parquet"),
                  train_events=pd.read_parquet(folder / "train_events.parquet"), protocol=protocol, cuts=cuts,
                  refits=read_refits(folder))
