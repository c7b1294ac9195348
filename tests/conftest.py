"""Shared fixtures: a tiny handmade canonical dataset whose splits and histories are worked out by hand below."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.schema import CanonicalTables

# Services in tests score with LightGBM's predict: compiling a bag to native code takes a minute of CPU that every
# service start would spend in the background. The compiled path has its own tests, which ask for it.
os.environ.setdefault("FASHIONREC_RANKER_COMPILE", "off")

T0 = pd.Timestamp("2024-03-01 10:00:00", tz="UTC")


def at(minutes: float) -> pd.Timestamp:
    """The tiny dataset's clock: `T0 + minutes`."""
    return T0 + pd.Timedelta(minutes=minutes)


# 3 categories x 3 items. F3 has a blank brand (optional attributes may be empty).
_ITEMS = [
    ("F1", "Footwear", "Red sneaker", "Acme", 50.0),
    ("F2", "Footwear", "Blue sneaker", "Acme", 55.0),
    ("F3", "Footwear", "Black boot", "", 80.0),
    ("C1", "Clothing", "Blue shirt", "Zed", 20.0),
    ("C2", "Clothing", "White shirt", "Zed", 22.0),
    ("C3", "Clothing", "Green dress", "Yon", 40.0),
    ("A1", "Accessories & Jewelry", "Gold ring", "Oro", 90.0),
    ("A2", "Accessories & Jewelry", "Silver ring", "Oro", 70.0),
    ("A3", "Accessories & Jewelry", "Leather belt", "Yon", 15.0),
]

# (user, session, minute, action, item, query, search_id), grouped per user and in time order.
#   u1: three purchases (F1 @2, C1 @12, F2 @22) -> val = C1, test = F2; training = u1's events before C1 (pos 0-4).
#   u2: one purchase (C2 @7) -> a test row and no val row.
#   u3: no purchase -> no targets; both clicks are training data.
#   u4: two purchases at the SAME minute 41 (A1 then A2 in file order) -> val = A1, test = A2.
_EVENTS = [
    ("u1", 1, 0, "search", None, "red sneakers", 1),
    ("u1", 1, 1, "click", "F1", None, None),
    ("u1", 1, 2, "purchase", "F1", None, None),
    ("u1", 2, 10, "search", None, "blue shirt", 2),
    ("u1", 2, 11, "click", "C1", None, None),
    ("u1", 2, 12, "purchase", "C1", None, None),
    ("u1", 3, 20, "search", None, "sneakers", 3),
    ("u1", 3, 21, "click", "F2", None, None),
    ("u1", 3, 22, "purchase", "F2", None, None),
    ("u2", 4, 5, "search", None, "shirt", 4),
    ("u2", 4, 6, "click", "C2", None, None),
    ("u2", 4, 7, "purchase", "C2", None, None),
    ("u3", 5, 3, "click", "F1", None, None),
    ("u3", 6, 30, "click", "F3", None, None),
    ("u4", 7, 40, "click", "A1", None, None),
    ("u4", 7, 41, "purchase", "A1", None, None),
    ("u4", 7, 41, "purchase", "A2", None, None),
]

# search_id -> organic results in position order (C3 under search 1 is out of that search's category).
_RESULTS = {1: ["F1", "F2", "C3"], 2: ["C1", "C2"], 3: ["F3", "F2"], 4: ["C2", "C3"]}


def make_tiny_tables() -> CanonicalTables:
    """A fresh copy of the tiny dataset with canonical dtypes."""
    items = pd.DataFrame(
        {
            "item_id": [i[0] for i in _ITEMS],
            "family_id": [f"fam-{i[0]}" for i in _ITEMS],
            "title": [i[2] for i in _ITEMS],
            "brand": [i[3] for i in _ITEMS],
            "category": [i[1] for i in _ITEMS],
            "subcategory": "",
            "color": "black",
            "size": "M",
            "material": "",
            "gender": "unisex",
            "season": "",
            "occasion": "",
            "price": [i[4] for i in _ITEMS],
            "created_at": pd.Timestamp("2024-01-01", tz="UTC"),
        }
    )
    items["created_at"] = items["created_at"].astype("datetime64[ms, UTC]")
    events = pd.DataFrame(
        _EVENTS, columns=["user_id", "session_id", "minute", "action", "item_id", "query", "search_id"]
    )
    events.insert(2, "timestamp", events.pop("minute").map(at).astype("datetime64[ms, UTC]"))
    events["search_id"] = events["search_id"].astype("Int64")
    search = events[events["action"] == "search"].set_index("search_id")
    rows = [
        (sid, search.at[sid, "user_id"], search.at[sid, "session_id"], search.at[sid, "query"],
         search.at[sid, "timestamp"], item, pos)
        for sid, shown in _RESULTS.items()
        for pos, item in enumerate(shown, start=1)
    ]  # fmt: skip
    results = pd.DataFrame(
        rows, columns=["search_id", "user_id", "session_id", "query", "timestamp", "item_id", "position"]
    )
    results["timestamp"] = results["timestamp"].astype("datetime64[ms, UTC]")
    return CanonicalTables(items=items, events=events, search_results=results)


@pytest.fixture
def tiny_tables() -> CanonicalTables:
    return make_tiny_tables()


@pytest.fixture(scope="session")
def sample_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fashionrec run` on the bundled sample (two epochs, the tiny LLM), once per session: the HTTP service's tests
    and the paper report's read it, and neither writes to it (the report writes under `report/` only)."""
    from typer.testing import CliRunner

    from orchestration.cli import app as cli

    root = tmp_path_factory.mktemp("sample_run") / "work"
    result = CliRunner().invoke(cli, ["run", "--workdir", str(root), "--models", "core-trm", "--epochs", "2",
                                      "--llm-model", "tiny", "--llm-prompts", "4", "--llm-targets", "2",
                                      "--llm-train-seconds", "3"])
    assert result.exit_code == 0, result.output
    return root
