"""Vector engines at our sizes: Qdrant Edge (plain index, and HNSW) against qdrant-client's local mode and numpy.

One collection of n unit vectors (default 90k x 64, medium-s0's catalog size and title dimension) with a `partition`
payload over C categories; top-k queries unfiltered and filtered to one category, one at a time. Every engine goes
through `VectorStore` except the numpy baseline, which is an exact scan of a float32 matrix (per-category matrices
for the filtered case). Reports build time, p50/p99 latency, the p50 ratio against qdrant-client's local mode (the
engine it replaces) measured in the same run, and recall@k against numpy.

    python benchmarks/vectorstore.py [--n 90000] [--dim 64] [--queries 200] [--hnsw]

`--hnsw` also builds HNSW (`optimize()`), which took minutes on 2 busy cores at 90k points.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from serving.vectorstore import VectorStore


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _timed(fn: Callable[[np.ndarray, str | None], list[str]], queries: np.ndarray, parts: list[str | None]
           ) -> tuple[np.ndarray, list[list[str]]]:
    ms, out = [], []
    for q, p in zip(queries, parts, strict=True):
        t = time.perf_counter()
        out.append(fn(q[None, :], p))
        ms.append((time.perf_counter() - t) * 1e3)
    return np.array(ms), out


def main(n: Annotated[int, typer.Option(help="Points")] = 90_000,
         dim: Annotated[int, typer.Option(help="Dimension")] = 64,
         categories: Annotated[int, typer.Option(help="Partitions")] = 4,
         queries: Annotated[int, typer.Option(help="Queries per row")] = 200,
         k: Annotated[int, typer.Option(help="Top-k")] = 100,
         hnsw: Annotated[bool, typer.Option(help="Also build and query HNSW (slow to build)")] = False,
         client_queries: Annotated[int, typer.Option(help="Queries for qdrant-client local (slow)")] = 50) -> None:
    rng = np.random.default_rng(0)
    vecs = _unit(rng.normal(size=(n, dim)))  # (n, d)
    ids = [f"i{i:06d}" for i in range(n)]
    cats = [f"cat{i % categories}" for i in range(n)]
    cat_arr = np.array(cats)
    qs = _unit(rng.normal(size=(queries, dim)))  # (Q, d)
    by_cat = {c: (np.flatnonzero(cat_arr == c)) for c in sorted(set(cats))}

    def numpy_search(q: np.ndarray, part: str | None) -> list[str]:
        rows = by_cat[part] if part is not None else None
        mat = vecs[rows] if rows is not None else vecs
        s = (mat @ q[0])  # (m,)
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top])]
        return [ids[i] for i in (rows[top] if rows is not None else top)]

    rows_out = []
    truth: dict[str, list[list[str]]] = {}
    for mode in ("unfiltered", "filtered"):
        parts = [None] * queries if mode == "unfiltered" else [f"cat{i % categories}" for i in range(queries)]
        # numpy matrices for the filtered case are prebuilt per category (what the old per-category layout did)
        cache = {c: vecs[r] for c, r in by_cat.items()}

        def numpy_fast(q: np.ndarray, part: str | None, cache: dict = cache) -> list[str]:
            mat = cache[part] if part is not None else vecs
            s = mat @ q[0]
            top = np.argpartition(-s, k)[:k]
            top = top[np.argsort(-s[top])]
            base = by_cat[part] if part is not None else np.arange(n)
            return [ids[i] for i in base[top]]

        ms, truth[mode] = _timed(numpy_fast, qs, parts)
        rows_out.append((mode, "numpy exact scan", 0.0, ms, 1.0))

    def store_rows(label: str, store: VectorStore, build: float, nq: int) -> None:
        for mode in ("unfiltered", "filtered"):
            parts = [None] * nq if mode == "unfiltered" else [f"cat{i % categories}" for i in range(nq)]
            _timed(lambda q, p: [h.id for h in store.search("v", q, k, partition=p)[0]], qs[:5], parts[:5])  # warm
            ms, got = _timed(lambda q, p: [h.id for h in store.search("v", q, k, partition=p)[0]], qs[:nq], parts)
            recall = np.mean([len(set(g) & set(t)) / k for g, t in zip(got, truth[mode][:nq], strict=True)])
            rows_out.append((mode, label, build, ms, float(recall)))

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = VectorStore.client_local(":memory:")
        store.upsert("v", ids, vecs, partitions=cats)
        store_rows("qdrant-client local (baseline)", store, time.perf_counter() - t, client_queries)
        store.close()

        t = time.perf_counter()
        store = VectorStore.local(Path(tmp) / "edge")
        store.upsert("v", ids, vecs, partitions=cats)
        store_rows("qdrant-edge plain", store, time.perf_counter() - t, queries)
        if hnsw:
            t = time.perf_counter()
            store._backend._shard("v").optimize()  # builds HNSW over the segments
            store_rows("qdrant-edge HNSW (optimize)", store, time.perf_counter() - t, queries)
        store.close()

    base = {m: np.percentile(ms, 50) for m, label, _, ms, _ in rows_out if label.startswith("qdrant-client")}
    print(f"\n{n} x {dim} cosine points, {categories} partitions, top-{k}, one query at a time\n")
    print("| query | engine | build s | queries | p50 ms | p99 ms | p50 vs qdrant-client | recall@k |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, label, build, ms, recall in rows_out:
        p50 = np.percentile(ms, 50)
        print(f"| {mode} | {label} | {build:.1f} | {len(ms)} | {p50:.2f} | {np.percentile(ms, 99):.2f} "
              f"| {p50 / base[mode]:.3f}x | {recall:.3f} |")


if __name__ == "__main__":
    typer.run(main)
