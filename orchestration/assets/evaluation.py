"""Evaluation assets: one per method (same targets, same code), and the markdown report over all of them."""

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from dagster import MaterializeResult, MetadataValue, asset

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from evaluation.metrics import Scorer, evaluate_many
from feature_repo.schema import CanonicalTables
from models.catalog import Catalog
from orchestration.assets.data import eval_targets
from orchestration.resources import WorkdirResource


def run_method(workdir: WorkdirResource, method: str, scorer: Scorer, catalog: Catalog,
               extra: dict | None = None, after: Callable[[], dict] | None = None) -> MaterializeResult:
    """Evaluate one method on the test targets, write `eval/<method>/`, and return metrics as metadata. `after`:
    more metrics, known only once the targets are scored."""
    return run_methods(workdir, {method: scorer}, catalog, {method: extra or {}},
                       None if after is None else {method: after})[method]


def run_methods(workdir: WorkdirResource, scorers: Mapping[str, Scorer], catalog: Catalog,
                extra: Mapping[str, dict] | None = None, after: Mapping[str, Callable[[], dict]] | None = None
                ) -> dict[str, MaterializeResult]:
    """`run_method` for several methods in one pass over the test targets (`evaluation.metrics.evaluate_many`):
    each method's files and metadata as alone; `eval_seconds` is the pass's, shared by all of them."""
    t0 = time.perf_counter()
    results = evaluate_many(scorers, workdir.layout.test_targets(), catalog, extra=extra)
    seconds = round(time.perf_counter() - t0, 2)
    out = {}
    for method, result in results.items():
        if after is not None and method in after:
            result.metrics |= after[method]()
        path = result.save(workdir.eval)
        o, c = result.metrics["overall"], result.metrics["cold_start"]
        out[method] = MaterializeResult(metadata={
            "recall@10": o["recall@10"], "ndcg@10": o["ndcg@10"], "mrr": o["mrr"], "n": o["n"],
            "cold_recall@10": c["recall@10"], "eval_seconds": seconds,
            **({"evaluated_with": ", ".join(m for m in results if m != method)} if len(results) > 1 else {}),
            "path": MetadataValue.path(str(path)),
        })
    return out


@asset(group_name="evaluation", deps=[eval_targets], description="Most popular in category (trailing 30 days)")
def popularity_eval(workdir: WorkdirResource):
    tables = CanonicalTables.read(workdir.canonical)
    catalog = Catalog.from_items(tables.items)
    cfg = PopularityConfig()
    return run_method(workdir, "popularity", PopularityScorer(tables.events, catalog, cfg), catalog,
                      extra={"config": {"window_days": cfg.window_days}})


@asset(group_name="evaluation", deps=[eval_targets], description="Last search's organic results, then popularity")
def last_search_eval(workdir: WorkdirResource):
    tables = CanonicalTables.read(workdir.canonical)
    catalog = Catalog.from_items(tables.items)
    pop = PopularityScorer(tables.events, catalog, PopularityConfig())
    return run_method(workdir, "last-search", LastSearchScorer(tables.search_results, pop, catalog), catalog)


METHOD_ASSETS = [popularity_eval, last_search_eval]


def read_results(eval_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(eval_dir.glob("*/metrics.json"))]


def per_category_table(results: list[dict], oracle: dict | None) -> str:
    rows = ["| method | category | items | n | R@10 | N@10 | MRR | R@10 / ceiling |", "|" + "---|" * 8]
    for m in results:
        for cat, v in m["per_category"].items():
            ceil = oracle.get(cat, {}).get("exp_recall10") if oracle else None
            frac = f"{v['recall@10'] / ceil:.3f}" if ceil else ""
            rows.append(f"| {m['method']} | {cat} | {v['n_items']:,} | {v['n']} | {v['recall@10']:.4f} | "
                        f"{v['ndcg@10']:.4f} | {v['mrr']:.4f} | {frac} |")
    return "\n".join(rows)
