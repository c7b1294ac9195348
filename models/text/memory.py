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

`AsOfMemory` is the same rule as of any time, from one build over the whole log: a lookup at t sees only searches
strictly before t (what the evaluation reads for each target, and what serving reads to replay a past request).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.common import l2_normalize, to_ns, utc
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


def aggregate_query_products(
    search_results: pd.DataFrame, cutoff: pd.Timestamp | str, cfg: MemoryConfig = MemoryConfig()
) -> list[MemoryRecord]:
    """Group search rows before cutoff by normalised query and rank their products (see module docstring)."""
    sr = search_results[search_results["timestamp"] < utc(cutoff)]
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
        self.built_before = utc(built_before)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(records):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(records)} records")
        if encoder is not None and len(records) and embeddings.shape[1] != encoder.dim:
            raise ValueError(f"embedding dim {embeddings.shape[1]} != encoder dim {encoder.dim}")
        late = [r.query for r in records if utc(r.last_search_at) >= self.built_before]
        if late:
            raise ValueError(
                f"{len(late)} memory records come from searches at/after {self.built_before}: {late[:3]}"
            )
        self.records = list(records)
        self.embeddings = l2_normalize(embeddings).reshape(embeddings.shape)  # (n, d) unit keys
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
        vectors = l2_normalize(vectors)  # (n, d)
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
                    "last_search_at": utc(r.last_search_at).isoformat(),
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


class AsOfMemory:
    """The query-product memory EXACTLY as of each lookup time, from one build over the whole search log.

    Keys are the unique normalised query texts (as `models.text.memory`), embedded once. `lookup(vectors, times)`
    returns, per row, the nearest q keys among those searched at least `cfg.min_searches` times strictly before that
    row's time, each with its top v products aggregated only from impressions strictly before that time by the rule
    of `aggregate_query_products` (mean reciprocal position over the key's searches, 0 when not shown; ties by
    impressions, then best position, then item_id). So a lookup at t equals `build_query_memory(..., cutoff=t)`
    followed by `lookup_vectors`. Assumes the rows of one search share its timestamp (the search's earliest row
    timestamp is used as its time).
    """

    def __init__(self, search_results: pd.DataFrame, encoder: TextEncoder, cfg: MemoryConfig = MemoryConfig(),
                 batch_size: int = 256) -> None:
        self.encoder, self.cfg = encoder, cfg
        sr = search_results
        if cfg.max_position is not None:
            sr = sr[sr["position"] <= cfg.max_position]
        sr = sr[sr["query"].notna() & sr["item_id"].notna()]
        norm = {q: normalize_text(q) for q in sr["query"].unique()}
        sr = sr.assign(key=sr["query"].map(norm), t=to_ns(sr["timestamp"]) if len(sr) else np.zeros(0, np.int64))
        sr = sr[sr["key"] != ""]
        key_code, keys = pd.factorize(sr["key"], sort=True)
        item_code, items = pd.factorize(sr["item_id"], sort=True)  # code order = item_id order (tie-break)
        sr = sr.assign(k=key_code, i=item_code)
        self.queries: list[str] = [str(k) for k in keys]  # (N,) key texts, sorted
        self.items = np.asarray(items, dtype=object)  # (n_items,) item ids, sorted
        n = len(self.queries)
        # One search per (key, search_id), at its earliest row time; sorted by key then time.
        searches = sr.groupby(["k", "search_id"], as_index=False)["t"].min().sort_values(["k", "t"], kind="stable")
        self.search_t = searches["t"].to_numpy(np.int64)  # (S,)
        self.search_ptr = np.searchsorted(searches["k"].to_numpy(), np.arange(n + 1))  # (N + 1,) CSR offsets
        # One impression per (key, search, item): its best position, at the search's time; sorted by key then time.
        imp = sr.groupby(["k", "search_id", "i"], as_index=False)["position"].min()
        imp = imp.merge(searches, on=["k", "search_id"]).sort_values(["k", "t"], kind="stable")
        self.imp_t = imp["t"].to_numpy(np.int64)  # (M,)
        self.imp_item = imp["i"].to_numpy(np.int64)  # (M,)
        self.imp_pos = imp["position"].to_numpy(np.int64)  # (M,)
        self.imp_ptr = np.searchsorted(imp["k"].to_numpy(), np.arange(n + 1))  # (N + 1,)
        # A key is visible at t once its min_searches-th search is strictly before t.
        counts = np.diff(self.search_ptr)  # (N,)
        m = max(cfg.min_searches, 1)
        self.visible_after = np.full(n, np.iinfo(np.int64).max, np.int64)  # (N,) visible iff this < t
        ok = counts >= m
        self.visible_after[ok] = self.search_t[self.search_ptr[:-1][ok] + m - 1]
        emb = encoder.encode(self.queries, batch_size=batch_size) if n else np.zeros((0, encoder.dim))  # (N, d)
        self.embeddings = l2_normalize(np.asarray(emb, np.float32).reshape(n, encoder.dim))  # (N, d) unit keys

    @classmethod
    def build(cls, search_results: pd.DataFrame, encoder: TextEncoder, cfg: MemoryConfig = MemoryConfig(),
              batch_size: int = 256) -> AsOfMemory:
        """The memory over all of `search_results` (what a lookup at t sees is cut at t)."""
        return cls(search_results, encoder, cfg, batch_size)

    def __len__(self) -> int:
        return len(self.queries)

    def products(self, key: int, t_ns: int, v: int, demote: str | None = None
                 ) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """Top-v products (and scores) of key index `key` from its impressions strictly before t_ns; `demote`
        goes after the products it ties with (score, impressions and best position equal) instead of by item id."""
        s0, s1 = self.search_ptr[key], self.search_ptr[key + 1]
        n_searches = int(np.searchsorted(self.search_t[s0:s1], t_ns, side="left"))
        i0, i1 = self.imp_ptr[key], self.imp_ptr[key + 1]
        i1 = i0 + int(np.searchsorted(self.imp_t[i0:i1], t_ns, side="left"))
        if n_searches == 0 or i1 == i0:
            return (), ()
        uniq, inv = np.unique(self.imp_item[i0:i1], return_inverse=True)  # (u,), (m,)
        pos = self.imp_pos[i0:i1]  # (m,)
        n_imp = np.bincount(inv, minlength=len(uniq))  # (u,)
        best = np.full(len(uniq), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, inv, pos)  # (u,) best position
        if self.cfg.aggregation == "mean_reciprocal":
            score = np.bincount(inv, weights=1.0 / pos.astype(float), minlength=len(uniq)) / n_searches  # (u,)
        elif self.cfg.aggregation == "best_position":
            score = 1.0 / best.astype(float)
        else:
            raise ValueError(f"unknown aggregation {self.cfg.aggregation!r}")
        # Scores rounded for the ordering: equal rational scores (1/3 + 1/3 + 1/3 + 1/2 vs 1 + 1/2) tie whatever the
        # floating-point summation order, and fall through to impressions, best position, item_id.
        tiebreak = uniq.copy()  # item codes are in item_id order
        if demote is not None:
            code = np.searchsorted(self.items, demote)
            if code < len(self.items) and self.items[code] == demote:
                tiebreak[uniq == code] = len(self.items)
        order = np.lexsort((tiebreak, best, -n_imp, -np.round(score, 12)))[: min(v, self.cfg.v_max)]  # last key first
        return tuple(self.items[uniq[order]].tolist()), tuple(float(x) for x in score[order])

    def lookup(self, query_vectors: np.ndarray, times: object, q: int = 5, v: int = 10,
               chunk: int = 1024, demote: Sequence[str | None] | None = None) -> list[list[MemoryHit]]:
        """Per row of query_vectors (B, d) at times (B,): nearest q visible keys (by cosine distance, then key
        index) with their top v products, all as of that row's time (see the class docstring). `demote` (B,)
        are ordered last among their ties in every product list (the evaluation's targets)."""
        if q < 1 or v < 1:
            raise ValueError(f"q and v must be >= 1, got q={q}, v={v}")
        vectors = l2_normalize(query_vectors)  # (B, d)
        t_ns = to_ns(times)  # (B,)
        if len(t_ns) != len(vectors):
            raise ValueError(f"{len(vectors)} query vectors but {len(t_ns)} times")
        n = len(self.queries)
        if n == 0:
            return [[] for _ in range(len(vectors))]
        k = min(q, n)
        out: list[list[MemoryHit]] = []
        for c0 in range(0, len(vectors), chunk):
            vis = self.visible_after[None, :] < t_ns[c0:c0 + chunk, None]  # (b, N)
            dist = np.clip(1.0 - vectors[c0:c0 + chunk] @ self.embeddings.T, 0.0, 2.0)  # (b, N)
            dist = np.where(vis, dist, np.inf)
            kth = np.partition(dist, k - 1, axis=1)[:, k - 1]  # (b,) k-th smallest distance
            for b in range(len(dist)):
                t = int(t_ns[c0 + b])
                cand = np.flatnonzero(dist[b] <= kth[b])  # every key tied at the boundary too
                cand = cand[np.lexsort((cand, dist[b, cand]))][:k]  # ascending distance, ties by key index
                hits = []
                for j in cand.tolist():
                    if not np.isfinite(dist[b, j]):
                        break  # fewer than q keys visible at t
                    prods, scores = self.products(j, t, v, None if demote is None else demote[c0 + b])
                    hits.append(MemoryHit(query=self.queries[j], distance=float(dist[b, j]), products=prods,
                                          scores=scores))
                out.append(hits)
        return out

    def lookup_queries(self, queries: Sequence[str], times: object, q: int = 5, v: int = 10) -> list[list[MemoryHit]]:
        """`lookup` for raw query texts (normalised and embedded with the memory's encoder)."""
        if len(queries) == 0:
            return []
        return self.lookup(self.encoder.encode([normalize_text(x) for x in queries]), times, q=q, v=v)
