"""Validate raw tables into the canonical ones; every rejected row goes to quarantine with its reason.

Checks (vectorised, driven by the schemas in `schema.py`): types and required fields, the action enum, an item for
click/purchase and a query + search_id for search, referential integrity against the catalog (and of search results
against search events), per-user timestamp order, duplicates, and repeats in one moment (a second click or purchase
of the same item by the same user at the same timestamp, `repeat_in_moment`: one action of several units). Nothing
is dropped silently: each row is either in the canonical output or in `quarantine/<table>.parquet` with a `reason`,
and `counts` reports both.

The output is a deterministic function of the input, so re-running ingest on the same input changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.schema import SCHEMAS, TABLES, Action, CanonicalTables

REPEAT = "repeat_in_moment"  # the reason of a second click/purchase of one item by one user at one moment


@dataclass
class IngestReport:
    """Rows kept and quarantined per table, with counts per reason."""

    kept: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n_quarantined(self) -> int:
        return sum(sum(r.values()) for r in self.quarantined.values())

    def to_dict(self) -> dict:
        return {"kept": self.kept, "quarantined": self.quarantined}

    def summary(self) -> str:
        lines = []
        for table, n in self.kept.items():
            q = self.quarantined.get(table, {})
            reasons = ", ".join(f"{r}={c}" for r, c in sorted(q.items())) or "none"
            lines.append(f"{table}: kept {n:,}, quarantined {sum(q.values()):,} ({reasons})")
        return "\n".join(lines)


class _Validator:
    """Marks the first failing reason per row; rows already marked keep their first reason."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.reason = pd.Series(pd.NA, index=df.index, dtype="string")

    def duplicated(self, cols: list[str]) -> pd.Series:
        """Rows that repeat an earlier still-valid row on `cols` (already rejected rows never count as the original)."""
        ok = self.ok
        key = self.df.loc[ok, cols].astype("string").fillna("\0")
        return key.duplicated(keep="first").reindex(self.df.index, fill_value=False)

    def fail(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        mask = pd.Series(mask, index=self.df.index).astype("boolean").fillna(False).astype(bool)  # NA: not failed
        mask &= self.reason.isna()
        self.reason[mask] = reason

    @property
    def ok(self) -> pd.Series:
        return self.reason.isna()


def _min_length_fields(model: type) -> frozenset[str]:
    return frozenset(n for n, info in model.model_fields.items()
                     if any(getattr(m, "min_length", None) for m in info.metadata))


_NON_EMPTY = {name: _min_length_fields(model) for name, model in TABLES.items()}


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def _coerce(v: _Validator, table: str) -> None:
    """Coerce each column to its canonical type; unparseable or missing required values fail as bad_<column>."""
    df = v.df
    for f in SCHEMAS[table]:
        if f.name not in df.columns:
            raise ValueError(f"{table}: input has no column {f.name!r}; expected {SCHEMAS[table].names}")
        raw = df[f.name]
        if pa.types.is_timestamp(f.type):
            if pd.api.types.is_datetime64_any_dtype(raw):
                parsed = pd.to_datetime(raw, utc=True)
            else:
                parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
            bad = parsed.isna() & raw.notna()
            df[f.name] = parsed.astype("datetime64[ms, UTC]")
        elif pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            parsed = pd.to_numeric(raw, errors="coerce")
            bad = parsed.isna() & raw.notna()
            if pa.types.is_integer(f.type):
                fractional = parsed.notna() & (parsed != np.floor(parsed.fillna(0)))
                bad |= fractional
                parsed = parsed.mask(fractional).astype("Int64")
            df[f.name] = parsed
        else:
            bad = pd.Series(False, index=df.index)
            df[f.name] = raw.astype("string").str.strip().astype(object).where(raw.notna(), None)
            if f.name in _NON_EMPTY[table]:
                bad |= _blank(df[f.name])
        if not f.nullable:
            bad |= df[f.name].isna()
        v.fail(bad, f"bad_{f.name}")


def _split(v: _Validator, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    kept = v.df[v.ok].reset_index(drop=True)
    bad = v.df[~v.ok].copy()
    bad.insert(0, "reason", v.reason[~v.ok].astype(str))
    bad.insert(1, "source_row", bad.index.astype("int64"))
    return kept, bad.reset_index(drop=True)


def validate_items(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    v = _Validator(raw.reset_index(drop=True).copy())
    _coerce(v, "items")
    v.fail(v.df["price"] < 0, "bad_price")
    v.fail(v.duplicated(["item_id"]), "duplicate_item_id")
    return _split(v, "items")


def validate_events(raw: pd.DataFrame, item_ids: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    v = _Validator(raw.reset_index(drop=True).copy())
    _coerce(v, "events")
    df = v.df
    v.fail(~df["action"].isin([a.value for a in Action]), "bad_action")
    is_search = df["action"] == Action.search
    v.fail(is_search & (_blank(df["query"]) | df["search_id"].isna()), "search_without_query")
    v.fail(is_search & df["item_id"].notna(), "search_with_item")
    v.fail(~is_search & df["item_id"].isna(), "missing_item")
    v.fail(~is_search & df["item_id"].notna() & ~df["item_id"].isin(item_ids), "unknown_item")
    # A second click or purchase of the same item by the same user at the same moment (on day-resolution data: the
    # same day) is one action of several units, not a second event: kept in quarantine under its own reason.
    v.fail(~is_search & v.duplicated(["user_id", "timestamp", "action", "item_id"]), REPEAT)
    v.fail(v.duplicated(["user_id", "timestamp", "action", "item_id", "query", "search_id"]), "duplicate_event")
    v.fail(is_search & v.duplicated(["search_id"]), "duplicate_search_id")
    # Per-user order (checked last, over the rows still valid): each kept row must not be earlier than the latest kept row before it in file order.
    ok = v.ok
    user = df["user_id"].where(ok, "\0")
    t = pd.Series(np.iinfo("int64").min, index=df.index)
    t[ok] = df.loc[ok, "timestamp"].astype("int64")
    prev = t.groupby(user).cummax().groupby(user).shift(1)
    v.fail(ok & prev.notna() & (t < prev), "timestamp_out_of_order")
    return _split(v, "events")


def validate_search_results(
    raw: pd.DataFrame, item_ids: pd.Index, search_ids: pd.Index
) -> tuple[pd.DataFrame, pd.DataFrame]:
    v = _Validator(raw.reset_index(drop=True).copy())
    _coerce(v, "search_results")
    df = v.df
    v.fail(df["position"] < 1, "bad_position")
    v.fail(~df["search_id"].isin(search_ids), "unknown_search")
    v.fail(~df["item_id"].isin(item_ids), "unknown_item")
    v.fail(v.duplicated(["search_id", "position"]), "duplicate_position")
    return _split(v, "search_results")


def validate(raw: CanonicalTables) -> tuple[CanonicalTables, dict[str, pd.DataFrame], IngestReport]:
    """Validate the three tables in dependency order: items, then events, then search results."""
    items, q_items = validate_items(raw.items)
    item_ids = pd.Index(items["item_id"])
    events, q_events = validate_events(raw.events, item_ids)
    search_ids = pd.Index(events.loc[events["action"] == Action.search, "search_id"])
    results, q_results = validate_search_results(raw.search_results, item_ids, search_ids)
    # Canonical order: per user by time; a stable sort keeps file order among equal timestamps.
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    results = results.sort_values(["search_id", "position"], kind="stable").reset_index(drop=True)
    clean = CanonicalTables(items=items, events=events, search_results=results)
    quarantine = {"items": q_items, "events": q_events, "search_results": q_results}
    report = IngestReport(
        kept={n: len(df) for n, df in clean.as_dict().items()},
        quarantined={n: q["reason"].value_counts().sort_index().to_dict() for n, q in quarantine.items()},
    )
    return clean, quarantine, report


def ingest(raw: CanonicalTables, out_dir: Path) -> IngestReport:
    """Validate `raw` and write canonical parquet, quarantine files and `ingest_report.json` under `out_dir`."""
    clean, quarantine, report = validate(raw)
    clean.write(out_dir)
    qdir = out_dir / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    for name, q in quarantine.items():
        table = pa.Table.from_pandas(q.astype({c: "string" for c in q.columns if c != "source_row"}), preserve_index=False)
        pq.write_table(table, qdir / f"{name}.parquet")
    (out_dir / "ingest_report.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return report
