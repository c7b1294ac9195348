"""Full-ranking evaluation: each target is ranked among ALL catalog items of its category, as in the paper.

Ties count against the target: `target_rank = 1 + #(score > s_t) + #(score == s_t, other items)`, so a method that
scores everything equally gets the worst rank, never the best. Recall@K and NDCG@K use that rank; MRR is `1/rank`
over the full ranking. `ranked_item_ids` lists the top 100 by score, ties in catalog order except that the target
sorts after the items it ties with, so its position there equals `target_rank`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

# A scorer maps a batch of targets (one category) and that category's catalog rows to scores (B, n_category_items).
Scorer = Callable[[pd.DataFrame, np.ndarray], np.ndarray]
TOP_N = 100


@dataclass(frozen=True)
class Catalog:
    """Catalog items in a fixed order (sorted by item_id); `rows[category]` indexes that category's items."""

    items: pd.DataFrame
    rows: dict[str, np.ndarray]

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Catalog:
        items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
        rows = {c: np.flatnonzero(items["category"].to_numpy() == c) for c in sorted(items["category"].unique())}
        return cls(items=items, rows=rows)

    @property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy()

    def index_of(self, item_ids: pd.Series | np.ndarray) -> np.ndarray:
        """Catalog row of each item id (raises on unknown ids)."""
        pos = pd.Index(self.items["item_id"]).get_indexer(np.asarray(item_ids))
        if (pos < 0).any():
            raise KeyError(f"{(pos < 0).sum()} item ids are not in the catalog, e.g. {np.asarray(item_ids)[pos < 0][:3]}")
        return pos


def ranks_from_scores(scores: np.ndarray, target_col: np.ndarray) -> np.ndarray:
    """1-based pessimistic rank of each row's target column. scores: (B, n), target_col: (B,)."""
    s_t = scores[np.arange(len(scores)), target_col][:, None]  # (B, 1)
    return 1 + (scores > s_t).sum(axis=1) + (scores == s_t).sum(axis=1) - 1


def top_n(scores: np.ndarray, target_col: np.ndarray, n: int = TOP_N) -> np.ndarray:
    """Column indices of the top `n` per row (B, min(n, cols)), the target after its ties (see module doc)."""
    b, cols = scores.shape
    n = min(n, cols)
    rows = np.arange(b)
    # Nudge the target just below its ties (nothing lies strictly between), so cuts through ties never favour it.
    adj = scores.astype(np.float64, copy=True)
    adj[rows, target_col] = np.nextafter(adj[rows, target_col], -np.inf)
    part = np.argpartition(-adj, n - 1, axis=1)[:, :n] if n < cols else np.tile(np.arange(cols), (b, 1))
    order = np.lexsort((part, -np.take_along_axis(adj, part, axis=1)), axis=1)  # score desc, then catalog order
    return np.take_along_axis(part, order, axis=1)


def metrics_from_ranks(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Recall@k, NDCG@k (one relevant item: 1/log2(rank+1)) and MRR, averaged over targets."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {"n": 0, f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "mrr": float("nan")}
    hit = ranks <= k
    return {
        "n": int(len(ranks)),
        f"recall@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }


@dataclass
class EvalResult:
    method: str
    rankings: pd.DataFrame
    metrics: dict = field(default_factory=dict)

    def save(self, eval_dir: Path) -> Path:
        """Write `<eval_dir>/<method>/metrics.json` and `rankings.parquet`."""
        out = eval_dir / self.method
        out.mkdir(parents=True, exist_ok=True)
        self.rankings.to_parquet(out / "rankings.parquet", index=False)
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
        return out


def summarize(method: str, rankings: pd.DataFrame, k: int = 10, extra: dict | None = None) -> dict:
    """Overall, per-category (with item counts), cold-start and warm metrics from a rankings table."""
    r = rankings["target_rank"].to_numpy()
    per_cat = {}
    for cat, g in rankings.groupby("category", sort=True):
        per_cat[cat] = {**metrics_from_ranks(g["target_rank"].to_numpy(), k), "n_items": int(g["n_category_items"].iloc[0])}
    cold = rankings["cold_start"].to_numpy(dtype=bool)
    return {
        "method": method,
        "k": k,
        "ties": "pessimistic: tied items rank ahead of the target",
        "overall": metrics_from_ranks(r, k),
        "per_category": per_cat,
        "cold_start": metrics_from_ranks(r[cold], k),
        "warm": metrics_from_ranks(r[~cold], k),
        **(extra or {}),
    }


def evaluate(
    method: str,
    scorer: Scorer,
    targets: pd.DataFrame,
    catalog: Catalog,
    *,
    k: int = 10,
    batch_size: int = 256,
    progress: bool = True,
    extra: dict | None = None,
) -> EvalResult:
    """Rank every target among its category's items with `scorer`, in batches; return rankings and metrics."""
    target_rows = catalog.index_of(targets["target_item_id"])
    parts = []
    bar = tqdm(total=len(targets), desc=f"eval {method}", disable=not progress, leave=False)
    for cat, idx in targets.groupby("category", sort=True).indices.items():
        cat_rows = catalog.rows[cat]
        col_of_row = pd.Series(np.arange(len(cat_rows)), index=cat_rows)
        for start in range(0, len(idx), batch_size):
            b = idx[start : start + batch_size]
            batch = targets.iloc[b]
            scores = np.asarray(scorer(batch, cat_rows), dtype=np.float64)  # (B, n_cat)
            if scores.shape != (len(b), len(cat_rows)):
                raise ValueError(f"{method}: scorer returned {scores.shape}, expected {(len(b), len(cat_rows))}")
            scores = np.nan_to_num(scores, nan=-np.inf)
            tcol = col_of_row.loc[target_rows[b]].to_numpy()
            ranks = ranks_from_scores(scores, tcol)
            top = cat_rows[top_n(scores, tcol)]
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": batch["user_id"].to_numpy(),
                        "category": cat,
                        "target_item_id": batch["target_item_id"].to_numpy(),
                        "n_category_items": len(cat_rows),
                        "cold_start": batch["cold_start"].to_numpy(dtype=bool),
                        "target_rank": ranks.astype(np.int64),
                        "ranked_item_ids": list(catalog.item_ids[top]),
                    }
                )
            )
            bar.update(len(b))
    bar.close()
    rankings = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    rankings["ranked_item_ids"] = rankings["ranked_item_ids"].map(list)
    return EvalResult(method=method, rankings=rankings, metrics=summarize(method, rankings, k, extra))


def load_oracle(data_dir: Path | None) -> dict | None:
    """The dataset's ceiling (`oracle_metrics.json`, synthetic sets), if it ships one."""
    path = data_dir / "oracle_metrics.json" if data_dir else None
    return json.loads(path.read_text()) if path and path.exists() else None


def metrics_table(results: list[dict], oracle: dict | None = None, k: int = 10) -> str:
    """A markdown table: one row per method (overall and cold-start), plus the ceiling and fractions of it."""
    head = f"| method | n | R@{k} | N@{k} | MRR | cold n | cold R@{k} | cold N@{k} | cold MRR |"
    rows = [head, "|" + "---|" * 9]
    if oracle:
        o = oracle["all"]
        rows.append(f"| ceiling (oracle exp_*) | {o['n']} | {o['exp_recall10']:.4f} | {o['exp_ndcg10']:.4f} | "
                    f"{o['exp_mrr']:.4f} | | | | |")
    for m in results:
        a, c = m["overall"], m["cold_start"]
        rows.append(
            f"| {m['method']} | {a['n']} | {a[f'recall@{k}']:.4f} | {a[f'ndcg@{k}']:.4f} | {a['mrr']:.4f} | "
            f"{c['n']} | {c[f'recall@{k}']:.4f} | {c[f'ndcg@{k}']:.4f} | {c['mrr']:.4f} |"
        )
    if oracle:
        o = oracle["all"]
        rows += ["", "Fraction of the ceiling (overall):", "", f"| method | R@{k} | N@{k} | MRR |", "|---|---|---|---|"]
        for m in results:
            a = m["overall"]
            rows.append(f"| {m['method']} | {a[f'recall@{k}'] / o['exp_recall10']:.3f} | "
                        f"{a[f'ndcg@{k}'] / o['exp_ndcg10']:.3f} | {a['mrr'] / o['exp_mrr']:.3f} |")
    return "\n".join(rows)
