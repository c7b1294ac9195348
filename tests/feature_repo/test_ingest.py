"""Ingest: every quarantine reason on a crafted bad row, nothing lost, deterministic output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo.ingest import ingest, validate, validate_events, validate_items, validate_search_results
from feature_repo.schema import TABLES, CanonicalTables, to_arrow
from tests.conftest import at, make_tiny_tables

GOOD = {"items": 9, "events": 17, "search_results": 9}  # the tiny dataset in conftest.py


def _append(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Good rows then bad rows, as object columns (raw input, not yet typed)."""
    return pd.concat(
        [df.astype(object), pd.DataFrame(rows, columns=df.columns, dtype=object)], ignore_index=True
    )


def _item(item_id: str, **kw: object) -> dict:
    row = {"item_id": item_id, "family_id": "fam", "title": "A title", "brand": "B", "category": "Footwear",
           "subcategory": "", "color": "", "size": "", "material": "", "gender": "", "season": "", "occasion": "",
           "price": 1.0, "created_at": at(-60)}  # fmt: skip
    return {**row, **kw}


def _event(
    user: str,
    minute: object,
    action: object,
    item: object = None,
    query: object = None,
    search_id: object = None,
    session: object = 9,
) -> dict:
    ts = at(minute) if isinstance(minute, int | float) else minute
    return {"user_id": user, "session_id": session, "timestamp": ts, "action": action, "item_id": item,
            "query": query, "search_id": search_id}  # fmt: skip


def _result(search_id: object, item: object, position: object) -> dict:
    return {"search_id": search_id, "user_id": "u1", "session_id": 1, "query": "q", "timestamp": at(0),
            "item_id": item, "position": position}  # fmt: skip


# Bad rows appended after the good ones; the key is the row's index in the raw table (9 items, 17 events, 9 results).
BAD_ITEMS = {
    9: (_item("F1", title="Another F1"), "duplicate_item_id"),
    10: (_item("X1", price=-1.0), "bad_price"),
    11: (_item("X2", price="cheap"), "bad_price"),
    12: (_item("X3", title="   "), "bad_title"),
    13: (_item("X4", created_at="someday"), "bad_created_at"),
}
BAD_EVENTS = {
    17: (_event("u9", 100, "click", "F1", session="abc"), "bad_session_id"),
    18: (_event("u9", "not a time", "click", "F1"), "bad_timestamp"),
    19: (_event("", 101, "click", "F1"), "bad_user_id"),
    20: (_event("u9", 102, "view", "F1"), "bad_action"),
    21: (_event("u9", 103, "click", None), "missing_item"),
    22: (_event("u9", 104, "search", None, "", 90), "search_without_query"),
    23: (_event("u9", 105, "search", None, "boots", None), "search_without_query"),
    24: (_event("u9", 106, "search", "F1", "boots", 91), "search_with_item"),
    25: (_event("u9", 107, "purchase", "ZZZ"), "unknown_item"),
    # u1's latest kept event is at minute 22, so a u1 row at minute 5 further down the file is out of order.
    26: (_event("u1", 5, "click", "F2", session=3), "timestamp_out_of_order"),
    27: (_event("u1", 1, "click", "F1", session=1), "repeat_in_moment"),  # good row 1 again: one click, two rows
    28: (_event("u2", 8, "search", None, "more shirts", 1, session=4), "duplicate_search_id"),  # id 1 is u1's
    29: (_event("u1", 0, "search", None, "red sneakers", 1, session=1), "duplicate_event"),  # same as good row 0
}
BAD_RESULTS = {
    9: (_result(77, "F1", 1), "unknown_search"),
    10: (_result(90, "F1", 1), "unknown_search"),  # search 90 exists but was quarantined (row 22)
    11: (_result(2, "C3", 0), "bad_position"),
    12: (_result(2, "C3", -3), "bad_position"),
    13: (_result(4, "ZZZ", 3), "unknown_item"),
    14: (_result(1, "C1", 1), "duplicate_position"),  # search 1 already has F1 at position 1
    15: (_result("one", "F1", 4), "bad_search_id"),
}
BAD = {"items": BAD_ITEMS, "events": BAD_EVENTS, "search_results": BAD_RESULTS}


def _raw_with_bad_rows() -> CanonicalTables:
    good = make_tiny_tables()
    return CanonicalTables(**{
        name: _append(df, [row for row, _ in BAD[name].values()]) for name, df in good.as_dict().items()
    })  # fmt: skip


def _counts(bad: dict[int, tuple[dict, str]]) -> dict[str, int]:
    return pd.Series([reason for _, reason in bad.values()]).value_counts().sort_index().to_dict()


@pytest.fixture
def ingested(tmp_path: Path):
    report = ingest(_raw_with_bad_rows(), tmp_path)
    return tmp_path, report


def test_each_bad_row_is_quarantined_with_its_reason(ingested) -> None:
    out, _ = ingested
    for name, bad in BAD.items():
        q = pd.read_parquet(out / "quarantine" / f"{name}.parquet")
        assert dict(zip(q["source_row"], q["reason"], strict=True)) == {i: r for i, (_, r) in bad.items()}, (
            name
        )


def test_good_rows_survive_unchanged(ingested) -> None:
    out, _ = ingested
    good = make_tiny_tables()
    kept = CanonicalTables.read(out)
    for name in TABLES:
        # The good rows are already in canonical order (items: file order; events: user, time; results: id, position).
        assert to_arrow(kept.as_dict()[name], name).equals(to_arrow(good.as_dict()[name], name)), name


def test_report_counts_per_reason_and_nothing_lost(ingested) -> None:
    out, report = ingested
    assert report.kept == GOOD
    assert report.quarantined == {name: _counts(bad) for name, bad in BAD.items()}
    assert report.quarantined["events"]["search_without_query"] == 2
    assert report.quarantined["search_results"]["unknown_search"] == 2
    assert report.n_quarantined == 5 + 13 + 7
    assert json.loads((out / "ingest_report.json").read_text()) == report.to_dict()
    raw = _raw_with_bad_rows()
    for name, df in raw.as_dict().items():
        n_q = len(pq.read_table(out / "quarantine" / f"{name}.parquet"))
        n_kept = pq.read_table(out / f"{name}.parquet").num_rows
        assert n_kept + n_q == len(df), name
    assert "events: kept 17, quarantined 13" in report.summary()


def test_reingest_is_byte_for_byte_identical(ingested) -> None:
    out, _ = ingested
    files = [f"{n}.parquet" for n in TABLES] + [f"quarantine/{n}.parquet" for n in TABLES]
    before = {f: pq.read_table(out / f) for f in files}
    report_before = (out / "ingest_report.json").read_text()
    ingest(_raw_with_bad_rows(), out)
    for f in files:
        assert pq.read_table(out / f).equals(before[f]), f
    assert (out / "ingest_report.json").read_text() == report_before


def test_blank_optional_attribute_is_valid(tiny_tables: CanonicalTables) -> None:
    items, q = validate_items(tiny_tables.items)
    assert q.empty
    assert items.set_index("item_id").at["F3", "brand"] == ""


def test_clean_input_quarantines_nothing(tiny_tables: CanonicalTables) -> None:
    _, quarantine, report = validate(tiny_tables)
    assert report.kept == GOOD and report.n_quarantined == 0
    assert all(q.empty for q in quarantine.values())


def test_missing_column_raises_a_clear_error(tiny_tables: CanonicalTables) -> None:
    raw = CanonicalTables(
        items=tiny_tables.items,
        events=tiny_tables.events.drop(columns="query"),
        search_results=tiny_tables.search_results,
    )
    with pytest.raises(ValueError, match=r"events: input has no column 'query'"):
        validate(raw)


def test_equal_timestamps_are_in_order(tiny_tables: CanonicalTables) -> None:
    # u4's two purchases share minute 41: ties are not "out of order", and file order is kept.
    events, q = validate_events(tiny_tables.events, pd.Index(tiny_tables.items["item_id"]))
    assert q.empty
    assert events.loc[events["user_id"] == "u4", "item_id"].tolist() == ["A1", "A1", "A2"]


# --- known bugs ------------------------------------------------------------------------------------------------


def test_unparseable_position_is_quarantined() -> None:
    raw = pd.DataFrame([_result(1, "F1", 1), _result(1, "F2", "first")], dtype=object)
    kept, q = validate_search_results(raw, pd.Index(["F1", "F2"]), pd.Index([1]))
    assert len(kept) == 1 and q["reason"].tolist() == ["bad_position"]


def test_fractional_integer_is_quarantined() -> None:
    raw = pd.DataFrame(
        [_event("u1", 0, "click", "F1", session=1), _event("u1", 1, "click", "F1", session=1.5)], dtype=object
    )
    kept, q = validate_events(raw, pd.Index(["F1"]))
    assert len(kept) == 1 and q["reason"].tolist() == ["bad_session_id"]


def _dup_items():
    rows = [_item("X1", price="n/a"), _item("X1", price=5.0)]
    return validate_items(pd.DataFrame(rows, dtype=object))


def _dup_events():
    rows = [_event("u1", 0, "click", "F1", session="abc"), _event("u1", 0, "click", "F1", session=1)]
    return validate_events(pd.DataFrame(rows, dtype=object), pd.Index(["F1"]))


def _dup_searches():
    rows = [_event("u1", 0, "search", None, " ", 5), _event("u1", 1, "search", None, "boots", 5)]
    return validate_events(pd.DataFrame(rows, dtype=object), pd.Index(["F1"]))


@pytest.mark.parametrize("case", [_dup_items, _dup_events, _dup_searches], ids=["item", "event", "search_id"])
def test_duplicate_of_a_quarantined_row_keeps_the_valid_row(case) -> None:
    kept, q = case()
    assert len(kept) == 1 and len(q) == 1 and not q["reason"].str.startswith("duplicate").any()


def test_order_check_only_compares_with_kept_rows() -> None:
    rows = [
        _event("u1", 0, "search", None, "boots", 1),
        _event("u1", 30, "search", None, "shoes", 1),  # duplicate search id: quarantined
        _event("u1", 20, "click", "F1"),  # later than every KEPT row before it (minute 0)
    ]
    kept, q = validate_events(pd.DataFrame(rows, dtype=object), pd.Index(["F1"]))
    assert q["reason"].tolist() == ["duplicate_search_id"]
    assert kept["action"].tolist() == ["search", "click"]
