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


def fit_pass(groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: RankerConfig = PASS_CONFIG
             ) -> LearnedRanker:
    """The second pass on (first-pass scores (n,), LLM scores (n,), labels (n,)) per list."""
    return fit_ranker([(pass_features(f, m), y) for f, m, y in groups], PASS_FEATURES, cfg)


def pass_config(seed: int) -> RankerConfig:
    return replace(PASS_CONFIG, seed=seed)


def second_pass(rows: np.ndarray, first: np.ndarray, llm: np.ndarray, model: LearnedRanker,
                demote: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first pass's top rows (n,) (best first, with their scores `first`) re-ordered by the second pass, and
    its scores in that order. Ties keep the first pass's order, except that the `demote` row (the evaluation's
    target) goes after every row it ties with."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return rows, np.zeros(0)
    s = model.score(pass_features(first, llm))
    tiebreak = np.arange(len(rows))
    if demote is not None:
        tiebreak[rows == demote] = len(rows)
    order = np.lexsort((tiebreak, -np.round(s, 9)))
    return rows[order], s[order]
