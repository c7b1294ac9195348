"""`ranker-llm`: a second LambdaMART pass over the first pass's top `n`, with the LLM's letter scores as features.

The first pass (the learned ranker) orders every candidate. Its top `n` (20) are shown to the LLM as lettered
candidates (shuffled per user, `display_order`); the LLM's log-probability of each candidate's letter, and the
first pass's own view of the same 20, are the features of a small second LambdaMART that re-orders them. The rest
of the first pass's order follows unchanged.

Trained on validation targets the LLM was not fine-tuned on, with the first pass's out-of-fold scores
(`LearnedRanker.oof`), so that it learns how far to trust each signal on targets neither model has seen.
`second_pass` is the one function the evaluation (`evaluation.llm.RankerLLMScorer`) and serving (`llm-rank`) call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from models.ranker.model import LearnedRanker, RankerConfig, fit_ranker

# Within one list of n: the first pass's rank (0 = its best) and score relative to its best and to the list's
# spread; the LLM's letter log-probability, its rank among the n, and its gap to the LLM's favourite.
PASS_FEATURES = ("first_rank", "first_gap", "first_z", "llm_logprob", "llm_rank", "llm_gap", "llm_z")
PASS_CONFIG = RankerConfig(num_leaves=7, learning_rate=0.05, max_rounds=400, early_stopping=60, min_rounds=10,
                           min_data_in_leaf=20, truncation=20)


def _rank_desc(x: np.ndarray) -> np.ndarray:
    """0 for the largest value; ties keep list order."""
    out = np.empty(len(x), np.float64)
    out[np.lexsort((np.arange(len(x)), -x))] = np.arange(len(x))
    return out


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros(len(x))


def pass_features(first: np.ndarray, llm: np.ndarray) -> np.ndarray:
    """(n, len(PASS_FEATURES)) for one list: `first` the first pass's scores in its order (best first), `llm` the
    letter log-probabilities of the same candidates (in the same order)."""
    first, llm = np.asarray(first, np.float64), np.asarray(llm, np.float64)
    if first.shape != llm.shape:
        raise ValueError(f"first-pass scores {first.shape} and LLM scores {llm.shape} differ in shape")
    n = len(first)
    if n == 0:
        return np.zeros((0, len(PASS_FEATURES)))
    return np.column_stack([np.arange(n, dtype=np.float64), first - first.max(), _z(first),
                            llm, _rank_desc(llm), llm - llm.max(), _z(llm)])


def fit_pass(groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: RankerConfig = PASS_CONFIG,
             check_folds: int = 4) -> LearnedRanker:
    """The second pass on (first-pass scores (n,), LLM scores (n,), labels (n,)) per list.

    Kept only if it beats the first pass on lists it did not train on: `check_folds`-fold cross-fitting (each fold's
    lists scored by a pass fitted on the others, its early stopping inside those) against the first pass's order of
    the same lists, NDCG@10 with ties against the bought item in both. (The bag's own held-out score is no judge: it
    chose its round count on those groups.) Otherwise it is returned without boosters, which keeps the first pass's
    order (`second_pass`), and `info["kept_first_pass"]` says why."""
    data = [(pass_features(f, m), y) for f, m, y in groups]
    model = fit_ranker(data, PASS_FEATURES, cfg)
    if not model.boosters:
        return model
    fold = np.random.default_rng(cfg.seed + 1000).permutation(len(data)) % check_folds
    crossed = np.zeros(len(data))
    for k in range(check_folds):
        part = fit_ranker([g for g, f in zip(data, fold, strict=True) if f != k], PASS_FEATURES, replace(cfg, bags=2))
        for i in np.flatnonzero(fold == k):
            x, y = data[i]
            order, _ = second_pass(np.arange(len(y)), groups[i][0], groups[i][1], part, demote=int(np.argmax(y)))
            crossed[i] = ndcg_at(-np.argsort(order).astype(np.float64), y)  # scored as the evaluation orders it
    second = float(crossed.mean())
    first = float(np.mean([ndcg_at(-np.arange(len(y), dtype=np.float64), y) for _, y in data]))  # its order
    model.info |= {"cross_fitted_ndcg@10": round(second, 4), "first_pass_ndcg@10": round(first, 4)}
    if second <= first:
        model.boosters = []
        model.info["kept_first_pass"] = (f"the second pass's cross-fitted NDCG@10 {second:.4f} does not beat the "
                                         f"first pass's {first:.4f} on the same {len(data)} validation lists")
    return model


def ndcg_at(scores: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one list ordered by `scores` (binary labels; a labelled row goes after every row it ties with)."""
    labels = np.asarray(labels) > 0
    if not labels.any():
        return 0.0
    order = np.lexsort((labels.astype(int), -np.asarray(scores, np.float64)))[:k]
    gains = labels[order] / np.log2(np.arange(2, len(order) + 2))
    ideal = (1 / np.log2(np.arange(2, min(int(labels.sum()), k) + 2))).sum()
    return float(gains.sum() / ideal)


def pass_config(seed: int) -> RankerConfig:
    return replace(PASS_CONFIG, seed=seed)


def second_pass(rows: np.ndarray, first: np.ndarray, llm: np.ndarray, model: LearnedRanker,
                demote: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first pass's top rows (n,) (best first, with their scores `first`) re-ordered by the second pass, and
    its scores in that order. Ties in the second pass's score are ordered by the first pass's; the `demote` row (the
    evaluation's target) goes after every row it ties with on both."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return rows, np.zeros(0)
    s = model.score(pass_features(first, llm))
    tiebreak = np.arange(len(rows))
    if demote is not None:
        tiebreak[rows == demote] = len(rows)
    # The second pass's score, then the first pass's: a constant second pass keeps the first pass's order exactly
    # (the demoted row after only the rows it ties with on both).
    order = np.lexsort((tiebreak, -np.asarray(first, np.float64), -np.round(s, 9)))
    return rows[order], s[order]
