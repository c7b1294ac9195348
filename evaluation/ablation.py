"""The ranker without each feature group (Table 3's own rows, `evaluation.paper`), exactly and without recomputing
features per variant.

Candidate generation does not depend on the ranker, so one pass computes every validation target's training group
and every test target's candidates and features (`test_examples`, as `evaluate` would see them: the target demoted
among ties). Each variant is a ranker fitted on the validation groups less one group's columns
(`models.ranker.features.features_without`), and a test target's rank is then:

- among its candidates: 1 + the released candidates that score above it or tie with it (ties count against the
  target, as the ranking stage orders them);
- when it is not a candidate: its rank in the full ranker's evaluation (`eval/ranker/rankings.parquet`), which the
  ranker does not decide (the candidates come first, then the rest of the category by title cosine).

`full_ranks` of the full ranker itself gives back that evaluation's ranks; the tests check it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from evaluation.common import category_batches
from evaluation.metrics import summarize
from evaluation.periods import split
from evaluation.ranking import RankerScorer, TrainingSet, fit_training_set
from models.catalog import Catalog
from models.common import to_ns
from models.ranker.candidates import generate
from models.ranker.features import FEATURE_GROUPS, FEATURE_NAMES, compute, features_without
from models.ranker.model import LearnedRanker, RankerConfig


@dataclass
class TargetGroups:
    """Each test target's candidates and features, in `evaluate`'s order of the targets."""

    order: np.ndarray  # (T,) positions into the targets, in the order `evaluate` writes its rankings
    rows: list[np.ndarray]  # candidate catalog rows, released by the target's time
    x: list[np.ndarray]  # (n, len(FEATURE_NAMES)) features of those rows
    target_at: np.ndarray  # (T,) index of the bought item among the rows, -1 when it is no candidate
    seconds: float


def test_examples(scorer: object, targets: pd.DataFrame, catalog: Catalog, progress: bool = False) -> TargetGroups:
    """The candidates and features of every target, through the fit that scores it (`scorer`: a `RankerScorer` or
    `by_fit`'s `PeriodScorer` of them), with the target demoted among list ties as `evaluate` does."""
    t0 = time.perf_counter()
    target_rows = catalog.index_of(targets["target_item_id"])
    order, rows, xs, at = [], [], [], []
    bar = tqdm(total=len(targets), desc="test examples", disable=not progress, leave=False)
    for _, b, batch, cat_rows in category_batches(targets, catalog):
        col = pd.Series(np.arange(len(cat_rows)), index=cat_rows)
        tcol = col.loc[target_rows[b]].to_numpy()
        out: list = [None] * len(b)
        for part, pos in split(scorer, batch):
            part_: RankerScorer = part  # type: ignore[assignment]
            inputs, _ = part_.inputs(batch.iloc[pos], cat_rows, tcol[pos])
            for j, inp in zip(pos, inputs, strict=True):
                cand = generate(inp, part_.ctx.attrs, part_.cfg)
                out[j] = (cand.rows, compute(inp, cand, part_.ctx))
        t_ns = to_ns(batch["target_ts"].to_numpy())
        for j, (r, x) in enumerate(out):
            keep = catalog.released(r, t_ns[j:j + 1])[0] | (r == target_rows[b[j]])  # as `evaluate`'s `valid`
            r, x = r[keep], x[keep]
            hit = np.flatnonzero(r == target_rows[b[j]])
            order.append(int(b[j]))
            rows.append(r)
            xs.append(x)
            at.append(int(hit[0]) if len(hit) else -1)
        bar.update(len(b))
    bar.close()
    return TargetGroups(np.asarray(order, np.int64), rows, xs, np.asarray(at, np.int64),
                      round(time.perf_counter() - t0, 2))


def full_ranks(model: LearnedRanker, test: TargetGroups, fallback: np.ndarray) -> np.ndarray:
    """(T,) each target's rank in its category under `model`, in `test.order`; `fallback[i]`: the rank where the
    target is no candidate (the full ranker's evaluation)."""
    cols = [FEATURE_NAMES.index(f) for f in model.features]
    out = np.asarray(fallback, np.int64).copy()
    for i, (x, a) in enumerate(zip(test.x, test.target_at, strict=True)):
        if a < 0:
            continue
        s = model.score(x[:, cols])
        out[i] = 1 + int((s > s[a]).sum()) + int((s == s[a]).sum()) - 1
    return out


def group_ablation(training: TrainingSet, test: TargetGroups, rankings: pd.DataFrame, cfg: RankerConfig,
                   groups: tuple[str, ...] = tuple(FEATURE_GROUPS), progress: bool = False) -> dict[str, dict]:
    """{"ranker": metrics, "ranker w/o <group>": metrics, ...}: each variant fitted on the same training set less one
    group's features, and scored on the same test targets. `rankings`: the full ranker's evaluation, in
    `test.order` (its `target_rank` is the fallback, its other columns the cold-start flags and categories)."""
    fallback = rankings["target_rank"].to_numpy()
    out = {}
    for name in tqdm(("", *groups), desc="ranker ablations", disable=not progress, leave=False):
        features = features_without(name) if name else FEATURE_NAMES
        model = fit_training_set(training, cfg, features)
        ranks = full_ranks(model, test, fallback)
        method = f"ranker w/o {name}" if name else "ranker"
        out[method] = {**summarize(method, rankings.assign(target_rank=ranks)), "features": len(features),
                       "dropped": list(FEATURE_GROUPS.get(name, ())), "fit_seconds": model.info.get("seconds", 0.0),
                       "importance_top5": dict(list(model.importances().items())[:5])}
    return out


def aligned(rankings: pd.DataFrame, targets: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    """The evaluation's rankings checked row by row against the targets in `order` (the same user, item and time)."""
    t = targets.iloc[order].reset_index(drop=True)
    r = rankings.reset_index(drop=True)
    same = (len(r) == len(t) and (r["user_id"].astype(str).to_numpy() == t["user_id"].astype(str).to_numpy()).all()
            and (r["target_item_id"].astype(str).to_numpy() == t["target_item_id"].astype(str).to_numpy()).all())
    if not same:
        raise ValueError("the ranker's evaluation does not hold these test targets in evaluate's order: "
                         "materialize `ranker_eval` again")
    return r


__all__ = ["TargetGroups", "aligned", "full_ranks", "group_ablation", "test_examples"]
