"""The ranking stage for one target or request: candidates -> features -> the learned ranker.

`RankingStage.rank` is the one function that the evaluation (`evaluation.ranking.RankerScorer`) and serving
(`serving.recommend.OnlineRetriever`) both call, so a request is ranked exactly as its evaluation target would be.
Ties in the ranker's score are ordered by item id, except that a `demote` row (the evaluation's target) goes after
every candidate it ties with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.ranker.candidates import CandidateConfig, Candidates, SearchLog, TargetInputs, generate
from models.ranker.features import FEATURE_NAMES, FeatureContext, compute
from models.ranker.model import LearnedRanker


@dataclass
class Ranked:
    """One target's ranked candidates."""

    rows: np.ndarray  # (n,) catalog rows, best first
    scores: np.ndarray  # (n,) the ranker's scores, in that order
    candidates: Candidates
    features: np.ndarray  # (n, F) in candidate (row) order


@dataclass
class RankingStage:
    """Candidates -> features -> ranker for one target or request: what evaluation and serving both run."""

    ctx: FeatureContext
    searches: SearchLog
    ranker: LearnedRanker | None = None  # None: every candidate scores the same
    cfg: CandidateConfig = field(default_factory=CandidateConfig)

    def rank(self, inp: TargetInputs, demote: int | None = None) -> Ranked:
        """Candidates, features and the ranker's order for one target; the `demote` row goes last among its ties."""
        return self.rank_many([inp], [demote])[0]

    def rank_many(self, inputs: Sequence[TargetInputs], demote: Sequence[int | None], threads: int = 1
                  ) -> list[Ranked]:
        """`rank` of each target, the ranker scoring every target's candidates in one call on `threads` threads
        (each candidate's score is its own, whatever the batch or the threads: the same floats as one by one)."""
        cands = [generate(inp, self.ctx.attrs, self.cfg) for inp in inputs]
        xs = [compute(inp, cand, self.ctx) for inp, cand in zip(inputs, cands, strict=True)]
        if self.ranker is not None and xs:
            cols = self._columns()
            flat = self.ranker.score(np.concatenate([x[:, cols] for x in xs]), threads=threads)
            scores = np.split(flat, np.cumsum([len(x) for x in xs])[:-1])
        else:
            scores = [np.zeros(len(c.rows)) for c in cands]
        out = []
        for cand, x, s, last in zip(cands, xs, scores, demote, strict=True):
            tiebreak = np.arange(len(cand.rows))  # rows ascending: ties in item id order
            if last is not None:
                tiebreak[cand.rows == last] = len(cand.rows)
            order = np.lexsort((tiebreak, -s))
            out.append(Ranked(cand.rows[order], s[order], cand, x))
        return out

    def _columns(self) -> list[int]:
        """The columns of `FEATURE_NAMES` the ranker was trained on, in its order (a model saved before a feature
        was added keeps working)."""
        assert self.ranker is not None
        unknown = [f for f in self.ranker.features if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"the ranker was trained on features this code does not compute: {unknown}")
        return [FEATURE_NAMES.index(f) for f in self.ranker.features]
