"""Query-product memory (paper section 4.2, "Query-product Memory Module").

Key-value pairs of (search query -> products listed at the top of its organic results). The log is grouped by
normalised query text and products are ordered by organic position; keys are query embeddings from any
`TextEncoder` (the paper used CLIP). At recommendation time the current query is embedded, the nearest Q stored
queries by cosine distance are found and their top V products returned.

Repeated impressions of one query (many searches with the same normalised text) are aggregated, by default, with
the MEAN RECIPROCAL POSITION over all of that query's searches, counting 0 where the item was not shown:
    score(q, i) = (1 / n_searches(q)) * sum over searches s of q of 1 / position_s(i).
This is the reciprocal position weighted by how often the item was shown: an item always at position 1 scores 1,
an item once at position 1 in five searches scores 0.2. Ties go to more impressions, then the best position,
then item_id (deterministic). `aggregation="best_position"` instead scores 1 / best position (ties by impressions).
Each query keeps its top `v_max` products.

Leakage guarantee: `build_query_memory` reads only search rows with timestamp strictly before `cutoff`; the memory
records that cutoff as `built_before` and refuses (ValueError) any record whose last search is at/after it.
The numpy index here is exact and the reference; `to_points()` gives plain records for a vector store upsert.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.text.encoder import TextEncoder
from models.text.tokenizer import normalize_text

RECORDS_FILE = "memory_records.json"
EMBEDDINGS_FILE = "memory_keys.npy"


@dataclass(frozen=True)
class MemoryConfig:
    """How the memory aggregates the search log."""

    v_max: int = 20  # products kept per query
    aggregation: Literal["mean_reciprocal", "best_position"] = "mean_reciprocal"
    max_position: int | None = None  # ignore impressions deeper than this organic position
    min_searches: int = 1  # drop queries searched fewer times than this


@dataclass(frozen=True)
class MemoryRecord:
    """One key-value entry: normalised query text and its ranked products."""

    query: str
    products: tuple[str, ...]
    scores: tuple[float, ...]
    n_searches: int
    last_search_at: pd.Timestamp


@dataclass(frozen=True)
class MemoryHit:
    """A stored query near the lookup query, with its cosine distance and top products."""

    query: str
    distance: float  # 1 - cosine similarity, in [0, 2]
    products: tuple[str, ...]
    scores: tuple[float, ...]


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    """A UTC timestamp; naive input is taken as UTC."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def aggregate_query_products(
    search_results: pd.DataFrame, cutoff: pd.Timestamp | str, cfg: MemoryConfig = MemoryConfig()
) -> list[MemoryRecord]:
    """Group search rows before cutoff by normalised query and rank their products (see module docstring)."""
    sr = search_results[search_results["timestamp"] < _utc(cutoff)]
    if cfg.max_position is not None:
        sr = sr[sr["position"] <= cfg.max_position]
    sr = sr[sr["query"].notna() & sr["item_id"].notna()]
    if sr.empty:
        return []
    keys = {q: normalize_text(q) for q in sr["query"].unique()}
    sr = sr.assign(key=sr["query"].map(keys))
    sr = sr[sr["key"] != ""]
    per_query = sr.groupby("key").agg(
        n_searches=("search_id", "nunique"), last_search_at=("timestamp", "max")
    )
    per_query = per_query[per_query["n_searches"] >= cfg.min_searches]
    # One impression per (search, item): its best position in that search.
    imp = sr.groupby(["key", "search_id", "item_id"], as_index=False)["position"].min()
    imp = imp.assign(rr=1.0 / imp["position"].astype(float))
    agg = imp.groupby(["key", "item_id"], as_index=False).agg(
        rr_sum=("rr", "sum"), n_imp=("rr", "size"), best=("position", "min")
    )
    agg = agg.merge(per_query, left_on="key", right_index=True)
    if cfg.aggregation == "mean_reciprocal":
        agg = agg.assign(score=agg["rr_sum"] / agg["n_searches"])
    elif cfg.aggregation == "best_position":
        agg = agg.assign(score=1.0 / agg["best"].astype(float))
    else:
        raise ValueError(f"unknown aggregation {cfg.aggregation!r}")
    agg = agg.sort_values(
        ["key", "score", "n_imp", "best", "item_id"],
        ascending=[True, False, False, True, True],
        kind="stable",
    )
    agg = agg.groupby("key", sort=True).head(cfg.v_max)
    records = []
    for key, g in agg.groupby("key", sort=True):
        meta = per_query.loc[key]
        records.append(
            MemoryRecord(
                query=str(key),
                products=tuple(g["item_id"]),
                scores=tuple(float(s) for s in g["score"]),
                n_searches=int(meta["n_searches"]),
                last_search_at=pd.Timestamp(meta["last_search_at"]),
            )
        )
    return records


class QueryProductMemory:
    """Exact cosine nearest-query index over memory records (numpy); the reference for vector-store versions."""

    def __init__(
        self,
        records: Sequence[MemoryRecord],
        embeddings: np.ndarray,
        built_before: pd.Timestamp | str,
        encoder: TextEncoder | None = None,
    ) -> None:
        self.built_before = _utc(built_before)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(records):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(records)} records")
        if encoder is not None and len(records) and embeddings.shape[1] != encoder.dim:
            raise ValueError(f"embedding dim {embeddings.shape[1]} != encoder dim {encoder.dim}")
        late = [r.query for r in records if _utc(r.last_search_at) >= self.built_before]
        if late:
            raise ValueError(
                f"{len(late)} memory records come from searches at/after {self.built_before}: {late[:3]}"
            )
        self.records = list(records)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)  # (n, 1)
        self.embeddings = embeddings / np.maximum(norms, 1e-12)  # (n, d) unit keys
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.records)

    @property
    def queries(self) -> list[str]:
        """Stored (normalised) query texts, in index order."""
        return [r.query for r in self.records]

    def lookup(self, queries: Sequence[str], q: int = 5, v: int = 10) -> list[list[MemoryHit]]:
        """For each query: the nearest q stored queries (ascending cosine distance) with their top v products."""
        if self.encoder is None:
            raise ValueError(
                "this memory has no encoder; use lookup_vectors with precomputed query embeddings"
            )
        if len(queries) == 0:
            return []
        vectors = self.encoder.encode([normalize_text(x) for x in queries])  # (n, d)
        return self.lookup_vectors(vectors, q=q, v=v)

    def lookup_vectors(self, vectors: np.ndarray, q: int = 5, v: int = 10) -> list[list[MemoryHit]]:
        """`lookup` for already-embedded queries (n, d)."""
        if q < 1 or v < 1:
            raise ValueError(f"q and v must be >= 1, got q={q}, v={v}")
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))  # (n, d)
        if len(self.records) == 0:
            return [[] for _ in range(len(vectors))]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # (n, d)
        dist = np.clip(1.0 - vectors @ self.embeddings.T, 0.0, 2.0)  # (n, N) cosine distance
        k = min(q, dist.shape[1])
        out = []
        for row in dist:
            cand = np.argpartition(row, k - 1)[:k] if k < len(row) else np.arange(len(row))  # (k,)
            cand = cand[np.lexsort((cand, row[cand]))]  # by distance, then index (deterministic ties)
            out.append(
                [
                    MemoryHit(
                        query=self.records[j].query,
                        distance=float(row[j]),
                        products=self.records[j].products[:v],
                        scores=self.records[j].scores[:v],
                    )
                    for j in cand
                ]
            )
        return out

    def to_points(self) -> list[dict[str, Any]]:
        """Plain records for a vector store: id, vector (list), and payload (query, products, scores, ...)."""
        return [
            {
                "id": i,
                "vector": self.embeddings[i].tolist(),
                "payload": {
                    "query": r.query,
                    "products": list(r.products),
                    "scores": list(r.scores),
                    "n_searches": r.n_searches,
                    "last_search_at": _utc(r.last_search_at).isoformat(),
                    "built_before": self.built_before.isoformat(),
                },
            }
            for i, r in enumerate(self.records)
        ]

    def save(self, directory: str | Path) -> Path:
        """Write keys (npy) and records + built_before (json) into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings)
        payload = {
            "built_before": self.built_before.isoformat(),
            "records": [p["payload"] for p in self.to_points()],
        }
        (directory / RECORDS_FILE).write_text(json.dumps(payload))
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder: TextEncoder | None = None) -> QueryProductMemory:
        """Read a memory written by `save`; pass the encoder that built its keys to use `lookup`."""
        directory = Path(directory)
        payload = json.loads((directory / RECORDS_FILE).read_text())
        records = [
            MemoryRecord(
                query=p["query"],
                products=tuple(p["products"]),
                scores=tuple(p["scores"]),
                n_searches=p["n_searches"],
                last_search_at=pd.Timestamp(p["last_search_at"]),
            )
            for p in payload["records"]
        ]
        return cls(records, np.load(directory / EMBEDDINGS_FILE), payload["built_before"], encoder)


def build_query_memory(
    search_results: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    encoder: TextEncoder,
    cfg: MemoryConfig = MemoryConfig(),
    batch_size: int = 256,
) -> QueryProductMemory:
    """Build the memory from search rows strictly before cutoff, keyed by `encoder` embeddings of the query text."""
    records = aggregate_query_products(search_results, cutoff, cfg)
    queries = [r.query for r in records]
    keys = encoder.encode(queries, batch_size=batch_size) if records else np.zeros((0, encoder.dim))  # (n, d)
    return QueryProductMemory(records, keys, built_before=cutoff, encoder=encoder)
