"""Qdrant local (path=) mode: one collection per partition vs one collection with a payload filter.

Run: python benchmarks/qdrant_local.py [--n 20000] [--dim 64] [--partitions 4] [--stock-n 2000]
Measures upserts and single-query latency (p50/p99) in one run, with ratios against the unfiltered
one-collection baseline. Stock local storage fsyncs sqlite once per point (~2-9 ms/point here), so
the full-size collections are written with `fast_writes` and the stock per-point cost is timed on a
`--stock-n` sample; journaling only affects writes, queries are in-memory numpy either way. Queries
go through the raw client so the layouts share one call path; one row adds VectorStore.search's
overhead. ~1-2 min at the defaults on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from qdrant_client import models

from serving.vectorstore import VectorStore, collection_name


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark sizes; defaults mirror one category-heavy catalog slice."""

    n: int = 20_000  # points in total (the partitions split them evenly)
    dim: int = 64
    partitions: int = 4
    k: int = 10
    queries: int = 200  # per unfiltered / partitioned layout
    filtered_queries: int = 30  # payload-filtered queries are ~25-50x slower in local mode
    stock_n: int = 2_000  # points per layout for the stock (fsync per point) upsert timing
    batch_size: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Row:
    """One layout's measurements (seconds)."""

    layout: str
    upsert_s: float | None  # all n points, fast_writes
    stock_s_per_point: float | None  # stock storage, timed on stock_n points
    latencies_s: np.ndarray | None  # (queries,)


def _time_queries(query: Callable[[int], object], count: int, warmup: int = 3) -> np.ndarray:
    """Call `query(i)` `count` times after a warmup; return each call's wall time in seconds."""
    for i in range(warmup):
        query(i)
    out = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        query(i)
        out[i] = time.perf_counter() - start
    return out


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cfg: BenchConfig, workdir: Path) -> list[Row]:
    """Build the layouts under `workdir` and measure them; returns rows, baseline first."""
    rng = np.random.default_rng(cfg.seed)
    vectors = rng.normal(size=(cfg.n, cfg.dim)).astype(np.float32)  # (n, d)
    queries = rng.normal(size=(max(cfg.queries, cfg.filtered_queries) + 3, cfg.dim))  # (Q, d)
    queries = queries.astype(np.float32)
    ids = [f"item{i}" for i in range(cfg.n)]
    cats = [f"cat{i % cfg.partitions}" for i in range(cfg.n)]
    payloads = [{"item_id": i, "category": c} for i, c in zip(ids, cats, strict=True)]
    part_of = [f"cat{i % cfg.partitions}" for i in range(len(queries))]  # the category each query targets

    def load(store: VectorStore, name: str, m: int, partitioned: bool) -> float:
        parts = cats[:m] if partitioned else None
        return _timed(
            lambda: store.upsert(name, ids[:m], vectors[:m], payloads[:m], parts, batch_size=cfg.batch_size)
        )

    m = min(cfg.stock_n, cfg.n)
    with VectorStore.local(workdir / "stock") as store:
        stock_single = load(store, "single", m, partitioned=False) / m
        stock_parts = load(store, "parts", m, partitioned=True) / m

    rows: list[Row] = []
    with VectorStore.local(workdir / "fast", fast_writes=True) as store:
        client = store.client
        t_single = load(store, "single", cfg.n, partitioned=False)
        t_parts = load(store, "parts", cfg.n, partitioned=True)

        def unfiltered(i: int) -> object:
            return client.query_points("single", query=queries[i].tolist(), limit=cfg.k)

        def filtered(i: int) -> object:
            match = models.FieldCondition(key="category", match=models.MatchValue(value=part_of[i]))
            return client.query_points(
                "single", query=queries[i].tolist(), limit=cfg.k, query_filter=models.Filter(must=[match])
            )

        def partitioned(i: int) -> object:
            physical = collection_name("parts", part_of[i])
            return client.query_points(physical, query=queries[i].tolist(), limit=cfg.k)

        def wrapped(i: int) -> object:
            return store.search("parts", queries[i : i + 1], cfg.k, partition=part_of[i])

        p = cfg.partitions
        rows.append(
            Row("1 collection, unfiltered", t_single, stock_single, _time_queries(unfiltered, cfg.queries))
        )
        rows.append(
            Row(
                "1 collection + payload filter",
                t_single,
                stock_single,
                _time_queries(filtered, cfg.filtered_queries),
            )
        )
        rows.append(Row(f"{p} partitions", t_parts, stock_parts, _time_queries(partitioned, cfg.queries)))
        rows.append(
            Row(f"{p} partitions, VectorStore.search", None, None, _time_queries(wrapped, cfg.queries))
        )
    return rows


def format_table(rows: list[Row]) -> str:
    """Render rows as a markdown table with ratios against the first (baseline) row."""
    base = rows[0]
    assert base.upsert_s is not None and base.latencies_s is not None
    base_p50 = float(np.percentile(base.latencies_s, 50))
    lines = [
        "| layout | upsert s (fast_writes) | vs base | stock upsert ms/point | queries | p50 ms | p99 ms | p50 vs base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        up = ratio_up = stock = n = p50 = p99 = ratio_q = "-"
        if r.upsert_s is not None:
            up, ratio_up = f"{r.upsert_s:.1f}", f"{r.upsert_s / base.upsert_s:.2f}x"
        if r.stock_s_per_point is not None:
            stock = f"{r.stock_s_per_point * 1e3:.2f}"
        if r.latencies_s is not None:
            p50_s, p99_s = np.percentile(r.latencies_s, [50, 99])
            n, p50, p99 = str(len(r.latencies_s)), f"{p50_s * 1e3:.2f}", f"{p99_s * 1e3:.2f}"
            ratio_q = f"{p50_s / base_p50:.2f}x"
        lines.append(f"| {r.layout} | {up} | {ratio_up} | {stock} | {n} | {p50} | {p99} | {ratio_q} |")
    return "\n".join(lines)


def main() -> None:
    """Parse sizes, run the benchmark in a temp dir and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=BenchConfig.n, help="points in total")
    parser.add_argument("--dim", type=int, default=BenchConfig.dim, help="vector size")
    parser.add_argument("--partitions", type=int, default=BenchConfig.partitions, help="categories")
    parser.add_argument("--queries", type=int, default=BenchConfig.queries, help="queries per fast layout")
    parser.add_argument(
        "--stock-n", type=int, default=BenchConfig.stock_n, help="points for stock upsert timing"
    )
    args = parser.parse_args()
    cfg = BenchConfig(
        n=args.n, dim=args.dim, partitions=args.partitions, queries=args.queries, stock_n=args.stock_n
    )

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(cfg, Path(tmp))
    print(
        f"qdrant-client {version('qdrant-client')}, local path mode, {cfg.n} x {cfg.dim}-d cosine, "
        f"{cfg.partitions} partitions, k={cfg.k}, batch_size={cfg.batch_size}, single-vector queries; "
        f"stock upsert timed on {min(cfg.stock_n, cfg.n)} points per layout"
    )
    print(format_table(rows))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
