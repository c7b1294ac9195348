"""Full-ranking evaluation: each target is ranked among every item of its category released by the target's time.

The candidate set of a target is its category's items whose `created_at` is at or before the target's timestamp
(an item without a `created_at` counts as always released; the target itself always counts). It is what serving
offers at that moment (`serving.recommend` filters by the request time the same way, `models.catalog`); items released later are
neither ranked nor counted.

Ties count against the target: `target_rank = 1 + #(score > s_t) + #(score == s_t, other items)`, so a method that
scores everything equally gets the worst rank, never the best. Scorers that build ordered lists (retrieval, mixup,
the variant re-rank) cut and merge lists before any score exists; they are "tie-aware" (`tie_aware = True`) and get
each target's column as `demote=`: wherever they order tied items (by item id otherwise, as serving does), that
column goes last. Recall@K and NDCG@K use that rank; MRR is `1/rank` over the full ranking. `ranked_item_ids` lists
the top 100 by score, ties in catalog order except that the target sorts after the items it ties with, so its
position there equals `target_rank`.

On day-resolution data a target's moment is a basket: when the targets carry `moment_items` (every item the user
bought at the target's moment, `feature_repo.splits`), `basket_rank` is the best pessimistic rank of any of them in
the target's category, and `basket_hit@K` the share of targets with a basket item in the top K (the target counts,
so it is at least Recall@K).

The ceiling (`ceiling`) is the mean of the dataset's per-target oracle metrics (`oracle.parquet`, synthetic sets)
over exactly the targets evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from evaluation.common import MAX_CELLS, category_batches
from models.catalog import Catalog
from models.common import to_ns

# A scorer maps a batch of targets (one category) and that category's catalog rows to scores (B, n_category_items).
Scorer = Callable[[pd.DataFrame, np.ndarray], np.ndarray]
TOP_N = 100


def ranks_from_scores(scores: np.ndarray, target_col: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """1-based pessimistic rank of each row's target column among the valid columns.

    scores: (B, n), target_col: (B,), valid: (B, n) bool candidates (default all; the target always counts).
    """
    s_t = scores[np.arange(len(scores)), target_col][:, None]  # (B, 1)
    ahead = scores >= s_t  # (B, n), the target itself included once (no NaN: every caller maps it to -inf)
    if valid is not None:
        ahead &= valid
        ahead[np.arange(len(scores)), target_col] = True
    return ahead.sum(axis=1)


def top_n(scores: np.ndarray, target_col: np.ndarray, n: int = TOP_N, valid: np.ndarray | None = None) -> np.ndarray:
    """Column indices of the top `n` per row (B, min(n, cols)), the target after its ties (see module doc).

    Invalid columns (`valid` False) sort after every valid one; callers drop them.
    """
    b, cols = scores.shape
    n = min(n, cols)
    rows = np.arange(b)
    # Nudge the target just below its ties (nothing lies strictly between), so cuts through ties never favour it.
    scores = np.asarray(scores, np.float64)
    adj = np.where(valid, scores, -np.inf) if valid is not None else scores.copy()
    adj[rows, target_col] = np.nextafter(adj[rows, target_col], -np.inf)
    np.negative(adj, out=adj)  # (in place: the partition and the sort read the negated scores)
    part = np.argpartition(adj, n - 1, axis=1)[:, :n] if n < cols else np.tile(np.arange(cols), (b, 1))
    order = np.lexsort((part, np.take_along_axis(adj, part, axis=1)), axis=1)  # score desc, then catalog order
    return np.take_along_axis(part, order, axis=1)


def basket_ranks(scores: np.ndarray, ranks: np.ndarray, baskets: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
    """(B,) the best pessimistic rank over each row's basket columns (its target's rank where the basket adds none).

    scores, valid: (B, n); ranks: (B,) the targets' ranks; baskets: per row, the columns of the other items bought
    at the target's moment. They were bought then, so they count as candidates (as the target does)."""
    out = np.asarray(ranks, np.int64).copy()
    for b, cols in enumerate(baskets):
        if len(cols):
            r = ranks_from_scores(scores[[b] * len(cols)], np.asarray(cols), valid[[b] * len(cols)])
            out[b] = min(out[b], int(r.min()))
    return out


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
    rare = rankings["warm_rare"].to_numpy(dtype=bool) if "warm_rare" in rankings else np.zeros(len(r), bool)
    out = {
        "method": method,
        "k": k,
        "ties": "pessimistic: tied items rank ahead of the target",
        "candidates": "the category's items released by the target's time",
        "overall": metrics_from_ranks(r, k),
        "per_category": per_cat,
        "cold_share": float(cold.mean()) if len(cold) else float("nan"),
        "cold_start": metrics_from_ranks(r[cold], k),
        "warm": metrics_from_ranks(r[~cold], k),
        "warm_rare": metrics_from_ranks(r[rare], k),
    }
    if "basket_rank" in rankings:
        b = rankings["basket_rank"].to_numpy()
        out["basket"] = {"n": int(len(b)), f"hit@{k}": float((b <= k).mean()) if len(b) else float("nan"),
                         "multi_item_share": float((rankings["moment_size"] > 1).mean()) if len(b) else float("nan")}
    if "n_candidates" in rankings:
        out["mean_candidates"] = float(rankings["n_candidates"].mean()) if len(rankings) else float("nan")
    return {**out, **(extra or {})}


def evaluate(
    method: str,
    scorer: Scorer,
    targets: pd.DataFrame,
    catalog: Catalog,
    *,
    k: int = 10,
    batch_size: int = 256,
    max_cells: int | None = MAX_CELLS,
    progress: bool = True,
    extra: dict | None = None,
) -> EvalResult:
    """Rank every target among its category's items with `scorer`, in batches of at most `batch_size` targets and
    `max_cells` (target, item) scores; return rankings and metrics."""
    return evaluate_many({method: scorer}, targets, catalog, k=k, batch_size=batch_size, max_cells=max_cells,
                         progress=progress, extra={method: extra or {}})[method]


def evaluate_many(
    scorers: Mapping[str, Scorer],
    targets: pd.DataFrame,
    catalog: Catalog,
    *,
    k: int = 10,
    batch_size: int = 256,
    max_cells: int | None = MAX_CELLS,
    progress: bool = True,
    extra: Mapping[str, dict] | None = None,
) -> dict[str, EvalResult]:
    """`evaluate` for several methods in one pass over the targets: each batch is handed to every scorer in turn
    before the next batch, so scorers that share work per batch (`RetrievalScorer.with_config`) do it once. The
    results are each method's `evaluate` alone (the same batches, ranks and metrics); `extra` per method."""
    target_rows = catalog.index_of(targets["target_item_id"])
    aware = {m: bool(getattr(s, "tie_aware", False)) for m, s in scorers.items()}
    parts: dict[str, list[pd.DataFrame]] = {m: [] for m in scorers}
    bar = tqdm(total=len(targets), desc=f"eval {', '.join(scorers)}", disable=not progress, leave=False)
    has_baskets = "moment_items" in targets
    cached: dict[str, tuple[pd.Series, dict[str, int]]] = {}
    for cat, b, batch, cat_rows in category_batches(targets, catalog, batch_size, max_cells):
        if cat not in cached:  # each category's column of every catalog row and item id
            cached[cat] = (pd.Series(np.arange(len(cat_rows)), index=cat_rows),
                           dict(zip(catalog.item_ids[cat_rows].tolist(), range(len(cat_rows)), strict=True)))
        col_of_row, col_of_item = cached[cat]
        tcol = col_of_row.loc[target_rows[b]].to_numpy()
        valid = catalog.released(cat_rows, to_ns(batch["target_ts"].to_numpy()))  # (B, n_cat)
        valid[np.arange(len(b)), tcol] = True  # bought, so it was on sale
        frame = {
            "user_id": batch["user_id"].to_numpy(),
            "category": cat,
            "target_item_id": batch["target_item_id"].to_numpy(),
            "target_ts": batch["target_ts"].to_numpy(),
            "n_category_items": len(cat_rows),
            "n_candidates": valid.sum(axis=1),
            "cold_start": batch["cold_start"].to_numpy(dtype=bool),
        }
        rare = {"warm_rare": batch["warm_rare"].to_numpy(dtype=bool)} if "warm_rare" in batch else {}
        others = None
        if has_baskets:  # the other items of the target's moment, in its category
            others = [np.array(sorted({col_of_item[i] for i in items if i in col_of_item} - {int(t)}), np.int64)
                      for items, t in zip(batch["moment_items"], tcol, strict=True)]
        for method, scorer in scorers.items():
            out = scorer(batch, cat_rows, demote=tcol) if aware[method] else scorer(batch, cat_rows)  # type: ignore[call-arg]
            scores = np.asarray(out, dtype=np.float64)  # (B, n_cat)
            if scores.shape != (len(b), len(cat_rows)):
                raise ValueError(f"{method}: scorer returned {scores.shape}, expected {(len(b), len(cat_rows))}")
            if not np.isfinite(scores).all():  # one pass; the three of nan_to_num only where needed
                scores = np.nan_to_num(scores, nan=-np.inf)
            ranks = ranks_from_scores(scores, tcol, valid)
            top = top_n(scores, tcol, valid=valid)
            keep = np.take_along_axis(valid, top, axis=1)  # (B, n)
            mine = {**frame, "target_rank": ranks.astype(np.int64),
                    "ranked_item_ids": [list(catalog.item_ids[cat_rows[t[m]]]) for t, m in zip(top, keep, strict=True)],
                    **rare}
            if others is not None:
                mine["moment_size"] = np.array([len(o) + 1 for o in others], np.int64)
                mine["basket_rank"] = basket_ranks(scores, ranks, others, valid)
            parts[method].append(pd.DataFrame(mine))
        bar.update(len(b))
    bar.close()
    results = {}
    for method, frames in parts.items():
        rankings = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(rankings):
            rankings["ranked_item_ids"] = rankings["ranked_item_ids"].map(list)
        results[method] = EvalResult(method=method, rankings=rankings,
                                     metrics=summarize(method, rankings, k, (extra or {}).get(method)))
    return results


def load_oracle(data_dir: Path | None) -> dict | None:
    """The dataset's whole-set ceiling (`oracle_metrics.json`, synthetic sets), if it ships one."""
    path = data_dir / "oracle_metrics.json" if data_dir else None
    return json.loads(path.read_text()) if path and path.exists() else None


def load_oracle_targets(data_dir: Path | None) -> pd.DataFrame | None:
    """The dataset's per-target oracle (`oracle.parquet`: user_id, timestamp, item_id, exp_*), if it ships one."""
    path = data_dir / "oracle.parquet" if data_dir else None
    return pd.read_parquet(path) if path and path.exists() else None


CEILING_COLUMNS = ("exp_recall10", "exp_ndcg10", "exp_mrr")


TARGET_KEY = ["user_id", "target_item_id", "target_ts"]


def target_ms(ts: pd.Series) -> pd.Series:
    """Target times as UTC milliseconds, the resolution targets are matched at across tables."""
    return pd.to_datetime(ts, utc=True).astype("datetime64[ms, UTC]")


def _matched(targets: pd.DataFrame, oracle: pd.DataFrame, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The targets that match an oracle row on (user_id, target_item_id, target_ts), with the oracle's `columns`."""
    o = oracle.rename(columns={"item_id": "target_item_id", "timestamp": "target_ts"})
    o = o.assign(target_ts=target_ms(o["target_ts"]))[[*TARGET_KEY, *columns]].drop_duplicates(TARGET_KEY)
    return targets.assign(target_ts=target_ms(targets["target_ts"])).merge(o, on=TARGET_KEY, how="inner")


def oracle_covered(data_dir: Path | None, targets: pd.DataFrame) -> pd.DataFrame | None:
    """The targets (user_id, target_item_id, target_ts) the dataset's per-target oracle covers: the ones `ceiling`
    averages over; None without a per-target oracle."""
    oracle = load_oracle_targets(data_dir)
    return None if oracle is None else _matched(targets[TARGET_KEY], oracle)


def ceiling(targets: pd.DataFrame, oracle: pd.DataFrame) -> dict:
    """The ceiling of exactly these targets: the mean of the oracle's exp_* over them, overall, per category and
    over the cold ones. Targets match oracle rows on (user_id, target_item_id, target_ts); `coverage` is the share
    of targets that matched (the means are over the matched ones)."""
    m = _matched(targets, oracle, CEILING_COLUMNS)

    def mean(df: pd.DataFrame) -> dict:
        return {"n": int(len(df)), **{c: float(df[c].mean()) if len(df) else float("nan") for c in CEILING_COLUMNS}}

    out = {"all": mean(m), "coverage": float(len(m) / len(targets)) if len(targets) else float("nan")}
    if "cold_start" in m:
        out["cold"] = mean(m[m["cold_start"].astype(bool)])
    if "category" in m:
        out |= {str(c): mean(g) for c, g in m.groupby("category", sort=True)}
    return out


def targets_ceiling(data_dir: Path | None, targets: pd.DataFrame, protocol: str) -> dict | None:
    """The ceiling for these targets: per-target from `oracle.parquet` when the dataset has it; else the whole-set
    `oracle_metrics.json`, which describes exactly the leave-one-out test targets only (None otherwise)."""
    per_target = load_oracle_targets(data_dir)
    if per_target is not None:
        return ceiling(targets, per_target)
    whole = load_oracle(data_dir)
    return whole if whole is not None and protocol == "loo" else None


def metrics_table(results: list[dict], oracle: dict | None = None, k: int = 10, basket: bool = False) -> str:
    """A markdown table: one row per method (overall and cold-start), plus the ceiling and fractions of it;
    `basket` adds the basket hit rate (day-resolution data: any item bought at the target's moment in the top k)."""
    head = f"| method | n | R@{k} | N@{k} | MRR | cold n | cold R@{k} | cold N@{k} | cold MRR |"
    head += f" basket HR@{k} |" if basket else ""
    rows = [head, "|" + "---|" * (10 if basket else 9)]
    if oracle:
        o = oracle["all"]
        rows.append(f"| ceiling (oracle exp_*) | {o['n']} | {o['exp_recall10']:.4f} | {o['exp_ndcg10']:.4f} | "
                    f"{o['exp_mrr']:.4f} | | | | |" + (" |" if basket else ""))
    for m in results:
        a, c = m["overall"], m["cold_start"]
        row = (f"| {m['method']} | {a['n']} | {a[f'recall@{k}']:.4f} | {a[f'ndcg@{k}']:.4f} | {a['mrr']:.4f} | "
               f"{c['n']} | {c[f'recall@{k}']:.4f} | {c[f'ndcg@{k}']:.4f} | {c['mrr']:.4f} |")
        if basket:
            hit = m.get("basket", {}).get(f"hit@{k}")
            row += f" {hit:.4f} |" if hit is not None else " |"
        rows.append(row)
    coverage = (oracle or {}).get("coverage", 1.0)
    if oracle and coverage < 1:
        rows += ["", f"The oracle covers {coverage:.0%} of the test targets, so a method's metric over all of them is "
                 "not a fraction of this ceiling: `fashionrec report` gives the fraction over the covered targets."]
    elif oracle:
        o = oracle["all"]
        every = max((m["overall"]["n"] for m in results), default=0)
        rows += ["", "Fraction of the ceiling (overall; the rows on every test target: the ceiling is theirs):", "",
                 f"| method | R@{k} | N@{k} | MRR |", "|---|---|---|---|"]
        for m in results:
            a = m["overall"]
            if a["n"] != every:
                continue  # a row on a sample of the targets (the LLM's): not over the ceiling's targets
            rows.append(f"| {m['method']} | {a[f'recall@{k}'] / o['exp_recall10']:.3f} | "
                        f"{a[f'ndcg@{k}'] / o['exp_ndcg10']:.3f} | {a['mrr'] / o['exp_mrr']:.3f} |")
    return "\n".join(rows)
