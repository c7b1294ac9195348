"""The canonical tables: `items`, `events` and `search_results`, declared once.

The pydantic models document and validate one row; the arrow schemas are derived from them and fix the on-disk types
(timestamps are `timestamp[ms, UTC]`, IDs are strings except `session_id`/`search_id`).
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

CATEGORIES = ("Luggage & Bags", "Footwear", "Accessories & Jewelry", "Clothing")
ITEM_ATTRIBUTES = (
    "title", "brand", "category", "subcategory", "color", "size",
    "material", "gender", "season", "occasion", "price",
)  # fmt: skip


class Action(StrEnum):
    search = "search"
    click = "click"
    purchase = "purchase"


class Item(BaseModel):
    """One catalog item, including items that no one ever interacted with."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1)
    family_id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    brand: str
    category: str = Field(min_length=1)
    subcategory: str
    color: str
    size: str
    material: str
    gender: str
    season: str
    occasion: str
    price: float = Field(ge=0)
    created_at: dt.datetime


class Event(BaseModel):
    """One user action. `item_id` is set for click/purchase, `query` and `search_id` for search."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1)
    session_id: int
    timestamp: dt.datetime
    action: Action
    item_id: str | None = None
    query: str | None = None
    search_id: int | None = None


class SearchResult(BaseModel):
    """One organic result shown for a search event."""

    model_config = ConfigDict(extra="forbid")
    search_id: int
    user_id: str = Field(min_length=1)
    session_id: int
    query: str = Field(min_length=1)
    timestamp: dt.datetime
    item_id: str = Field(min_length=1)
    position: int = Field(ge=1)


_TS = pa.timestamp("ms", tz="UTC")
_ARROW_OVERRIDES = {"position": pa.int16()}


def _arrow_type(name: str, annotation: object) -> pa.DataType:
    if name in _ARROW_OVERRIDES:
        return _ARROW_OVERRIDES[name]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is dt.datetime:
        return _TS
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    return pa.string()  # str and Action


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The on-disk schema of a canonical table, derived from its pydantic model."""
    fields = []
    for name, info in model.model_fields.items():
        nullable = not info.is_required()
        fields.append(pa.field(name, _arrow_type(name, info.annotation), nullable=nullable))
    return pa.schema(fields)


TABLES: dict[str, type[BaseModel]] = {"items": Item, "events": Event, "search_results": SearchResult}
SCHEMAS: dict[str, pa.Schema] = {name: arrow_schema(model) for name, model in TABLES.items()}


@dataclass(frozen=True)
class CanonicalTables:
    """The three canonical tables as DataFrames (before or after validation)."""

    items: pd.DataFrame
    events: pd.DataFrame
    search_results: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {"items": self.items, "events": self.events, "search_results": self.search_results}

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write each table as `<name>.parquet` with the canonical arrow schema."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, df in self.as_dict().items():
            path = out_dir / f"{name}.parquet"
            table = to_arrow(df, name)
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(table, tmp)
            tmp.replace(path)  # atomic: a crashed run never leaves half a table
            paths[name] = path
        return paths

    @classmethod
    def read(cls, data_dir: Path) -> CanonicalTables:
        missing = [n for n in TABLES if not (data_dir / f"{n}.parquet").exists()]
        if missing:
            raise FileNotFoundError(
                f"{data_dir} is not a canonical dataset: missing {', '.join(m + '.parquet' for m in missing)}"
            )
        return cls(**{n: pq.read_table(data_dir / f"{n}.parquet").to_pandas() for n in TABLES})


def to_arrow(df: pd.DataFrame, table: str) -> pa.Table:
    """Cast a DataFrame to the canonical arrow schema of `table` (columns in schema order)."""
    schema = SCHEMAS[table]
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}")
    cols = {}
    for f in schema:
        s = df[f.name]
        if pa.types.is_timestamp(f.type):
            s = pd.to_datetime(s, utc=True).astype("datetime64[ms, UTC]")
        cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    return pa.table(cols, schema=schema)
