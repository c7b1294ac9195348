"""Every sequential model and baseline on medium-s0 and the real H&M sample, in one run, through the platform.

    python benchmarks/seqrec.py [--epochs 20] [--datasets medium hm] [--out bench-work] [--protocol temporal|loo]

Each dataset goes through the same Dagster graph as `fashionrec run` (same split, same evaluation code), so every
row is comparable. Prints Recall@10, NDCG@10 and MRR overall, on cold-start targets and per category, and the
training time per epoch. The baseline for the ratio column is the best popularity/last-search row of the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, materialize

from evaluation.metrics import targets_ceiling
from orchestration.definitions import all_assets, all_checks, build_resources

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "medium": (SHARED / "synthetic" / "medium-s0", "canonical"),
    "hm": (SHARED / "real" / "hm", "hm"),
    "small": (SHARED / "synthetic" / "small-s0", "canonical"),
}
BASELINES = ("popularity", "last-search")


def run(name: str, out: Path, epochs: int, protocol: str) -> tuple[list[dict], float]:
    data, fmt = DATASETS[name]
    workdir = out / f"{name}-{protocol}"
    resources = build_resources(str(data), fmt, str(workdir), training={"epochs": epochs, "progress": False},
                                protocol=protocol)
    t0 = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        materialize([*all_assets, *all_checks], resources=resources, instance=instance,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    results = [json.loads(p.read_text()) for p in sorted((workdir / "eval").glob("*/metrics.json"))]
    return results, time.perf_counter() - t0


def table(name: str, results: list[dict], oracle: dict | None) -> str:
    base = max((r for r in results if r["method"] in BASELINES), key=lambda r: r["overall"]["ndcg@10"])
    b = base["overall"]["ndcg@10"]
    lines = [f"### {name}: overall (baseline for ratios: {base['method']})", "",
             "| method | R@10 | N@10 | MRR | N@10 / baseline | cold R@10 | cold N@10 | cold MRR | s/epoch | best epoch |",
             "|" + "---|" * 10]
    if oracle:
        o = oracle["all"]
        lines.append(f"| ceiling | {o['exp_recall10']:.4f} | {o['exp_ndcg10']:.4f} | {o['exp_mrr']:.4f} | "
                     f"{o['exp_ndcg10'] / b:.1f}x | | | | | |")
    for r in sorted(results, key=lambda r: -r["overall"]["ndcg@10"]):
        a, c = r["overall"], r["cold_start"]
        spe = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
        lines.append(f"| {r['method']} | {a['recall@10']:.4f} | {a['ndcg@10']:.4f} | {a['mrr']:.4f} | "
                     f"{a['ndcg@10'] / b:.2f}x | {c['recall@10']:.4f} | {c['ndcg@10']:.4f} | {c['mrr']:.4f} | "
                     f"{spe} | {r.get('best_epoch', '')} |")
    lines += ["", f"### {name}: per category (R@10 / N@10 / MRR)", ""]
    cats = sorted({c for r in results for c in r["per_category"]})
    lines.append("| method | " + " | ".join(f"{c} ({results[0]['per_category'].get(c, {}).get('n', 0)})"
                                           for c in cats) + " |")
    lines.append("|" + "---|" * (len(cats) + 1))
    for r in sorted(results, key=lambda r: -r["overall"]["ndcg@10"]):
        cells = []
        for c in cats:
            v = r["per_category"].get(c)
            cells.append(f"{v['recall@10']:.3f} / {v['ndcg@10']:.3f} / {v['mrr']:.3f}" if v else "")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["medium", "hm"], choices=sorted(DATASETS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench-work"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--protocol", default="temporal", choices=["temporal", "loo"])
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in args.datasets:
        results, seconds = run(name, args.out, args.epochs, args.protocol)
        data, fmt = DATASETS[name]
        targets = pd.read_parquet(args.out / f"{name}-{args.protocol}" / "splits" / "targets.parquet")
        test = targets[targets["split"] == "test"]
        print(table(f"{name} ({args.protocol})", results,
                    targets_ceiling(data if fmt == "canonical" else None, test, args.protocol)))
        print(f"\n{name}: whole graph {seconds:.0f} s\n", flush=True)


if __name__ == "__main__":
    main()
