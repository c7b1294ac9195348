"""Foundation benchmark: ingest throughput and Feast online-lookup latency, with same-run baselines.

    python benchmarks/foundation.py [--data ../shared/data/synthetic/medium-s0]

Baselines: ingest is compared with a plain parquet read of the same files; `get_online_features` is compared with a
raw SQLite SELECT of the same rows from Feast's own online table (the floor any online store call pays).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from feature_repo.features import write_feature_tables
from feature_repo.ingest import ingest
from feature_repo.schema import CanonicalTables
from feature_repo.store import FeatureRepo

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthetic" / "medium-s0"


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fashionrec-bench-"))

    t0 = time.perf_counter()
    raw = CanonicalTables(**{n: pq.read_table(args.data / f"{n}.parquet").to_pandas()
                             for n in ("items", "events", "search_results")})
    read_s = time.perf_counter() - t0
    n_rows = sum(len(df) for df in raw.as_dict().values())
    t0 = time.perf_counter()
    ingest(raw, work / "canonical")
    ingest_s = time.perf_counter() - t0

    write_feature_tables(raw.items, raw.events, work / "features")
    repo = FeatureRepo(work / "features", work / "feast")
    repo.apply()
    t0 = time.perf_counter()
    repo.materialize()
    mat_s = time.perf_counter() - t0

    users = raw.events["user_id"].unique()
    rng = np.random.default_rng(0)
    con = sqlite3.connect(repo.config.online_store.path)
    table = [r[0] for r in con.execute("select name from sqlite_master where type='table'") if "user_sequence" in r[0]][0]
    rows = []
    for n in (1, 100):
        feast_t, raw_t = [], []
        for _ in range(args.repeats):
            batch = list(rng.choice(users, n, replace=False))
            t = time.perf_counter()
            repo.online(batch)
            feast_t.append(time.perf_counter() - t)
            keys = [k for (k,) in con.execute(f"select entity_key from {table} limit ?", (n,))]
            t = time.perf_counter()
            q = f"select entity_key, feature_name, value from {table} where entity_key in ({','.join('?' * len(keys))})"
            con.execute(q, keys).fetchall()
            raw_t.append(time.perf_counter() - t)
        (fp50, fp99), (rp50, rp99) = percentiles(feast_t), percentiles(raw_t)
        rows.append((n, fp50, fp99, rp50, rp99))

    print(f"\nDataset: {args.data}  ({n_rows:,} input rows)\n")
    print("| step | seconds | rows/s | ratio to baseline |")
    print("|---|---|---|---|")
    print(f"| parquet read (baseline) | {read_s:.2f} | {n_rows / read_s:,.0f} | 1.0 |")
    print(f"| ingest (validate + quarantine + write) | {ingest_s:.2f} | {n_rows / ingest_s:,.0f} | {ingest_s / read_s:.1f}x |")
    print(f"| feast materialize (user sequences) | {mat_s:.2f} | | |")
    print("\n| get_online_features users | feast p50 ms | feast p99 ms | raw sqlite p50 ms (baseline) | p50 ratio |")
    print("|---|---|---|---|---|")
    for n, fp50, fp99, rp50, _ in rows:
        print(f"| {n} | {fp50:.2f} | {fp99:.2f} | {rp50:.3f} | {fp50 / rp50:.1f}x |")


if __name__ == "__main__":
    main()
