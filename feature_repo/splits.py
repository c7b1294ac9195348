"""Leave-one-out splits on purchases, per user, with a cold-start flag and a cross-category variant.

Order is by timestamp, then by event order in the canonical table (never by item ID). Per user, the last purchase is
the test target and the one before it the validation target; every event before the user's first held-out target is
training data. A user with one purchase gets a test row (history = their earlier searches and clicks) and no
validation row. A target's history is every event strictly before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INTERACTIONS = ("click", "purchase")


@dataclass(frozen=True)
class Splits:
    """`targets`: one row per held-out purchase; `train_events`: every event before each user's first target."""

    targets: pd.DataFrame  # user_id, split, target_item_id, target_ts, category, n_history, cold_start
    train_events: pd.DataFrame

    def split(self, name: str) -> pd.DataFrame:
        return self.targets[self.targets["split"] == name].reset_index(drop=True)

    @property
    def train_items(self) -> pd.Index:
        """Items that occur (clicked or purchased) in the training events."""
        inter = self.train_events[self.train_events["action"].isin(INTERACTIONS)]
        return pd.Index(inter["item_id"].unique())


def ordered_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events sorted per user by (timestamp, canonical event order), with `pos` = position within the user."""
    ev = events.reset_index(drop=True)
    ev = ev.assign(_order=np.arange(len(ev))).sort_values(["user_id", "timestamp", "_order"], kind="stable")
    ev = ev.drop(columns="_order").reset_index(drop=True)
    return ev.assign(pos=ev.groupby("user_id").cumcount())


def leave_one_out(events: pd.DataFrame, items: pd.DataFrame) -> Splits:
    """Build the leave-one-out targets and training events (see module docstring)."""
    ev = ordered_events(events)
    # Events strictly before an event's timestamp: ties at the same timestamp are not history (see features.py).
    ev["n_before"] = ev.groupby(["user_id", "timestamp"])["pos"].transform("min")
    purchases = ev[ev["action"] == "purchase"]
    rank_from_end = purchases.groupby("user_id").cumcount(ascending=False)
    held = purchases[rank_from_end < 2].assign(split=np.where(rank_from_end[rank_from_end < 2] == 0, "test", "val"))
    first_target_pos = held.groupby("user_id")["pos"].min()
    cutoff = ev["user_id"].map(first_target_pos)
    train_events = ev[cutoff.notna() & (ev["pos"] < cutoff)].reset_index(drop=True)
    # Users who never purchase have no target; their events are still training data for the sequence models.
    train_events = pd.concat([train_events, ev[cutoff.isna()]], ignore_index=True)

    category = items.set_index("item_id")["category"]
    targets = pd.DataFrame(
        {
            "user_id": held["user_id"].to_numpy(),
            "split": held["split"].to_numpy(),
            "target_item_id": held["item_id"].to_numpy(),
            "target_ts": held["timestamp"].to_numpy(),
            "category": held["item_id"].map(category).to_numpy(),
            "n_history": held["n_before"].to_numpy(),
        }
    )
    inter = train_events[train_events["action"].isin(INTERACTIONS)]
    targets["cold_start"] = ~targets["target_item_id"].isin(pd.Index(inter["item_id"].unique()))
    targets = targets.sort_values(["split", "user_id"], kind="stable").reset_index(drop=True)
    return Splits(targets=targets, train_events=train_events.drop(columns=["pos", "n_before"]))


def cross_category(splits: Splits, items: pd.DataFrame, train_category: str, test_category: str) -> Splits:
    """Zero-shot split: train on `train_category` interactions (and all searches), test on `test_category` targets."""
    category = splits.train_events["item_id"].map(items.set_index("item_id")["category"])
    keep = (splits.train_events["action"] == "search") | (category == train_category)
    train_events = splits.train_events[keep].reset_index(drop=True)
    targets = splits.targets[splits.targets["category"] == test_category].copy()
    inter = train_events[train_events["action"].isin(INTERACTIONS)]
    targets["cold_start"] = ~targets["target_item_id"].isin(pd.Index(inter["item_id"].unique()))
    return Splits(targets=targets.reset_index(drop=True), train_events=train_events)


def training_cutoffs(splits: Splits, events: pd.DataFrame) -> pd.DataFrame:
    """Per user, the time before which all events are training data: the first target, else after the last event."""
    first = splits.targets.groupby("user_id")["target_ts"].min()
    others = events[~events["user_id"].isin(first.index)].groupby("user_id")["timestamp"].max()
    cut = pd.concat([first, others + pd.Timedelta(milliseconds=1)])
    return cut.rename("cutoff_ts").rename_axis("user_id").reset_index()
