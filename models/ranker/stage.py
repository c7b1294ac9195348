"""The ranking stage for one target or request: candidates -> features -> the learned ranker.

`RankingStage.rank` is the one function that the evaluation (`evaluation.ranking.RankerScorer`) and serving
(`serving.recommend.OnlineRetriever`) both call, so a request is ranked exactly as its evaluation target would be.
Ties in the ranker's score are ordered by item id, except that a `demote` row (the evaluation's target) goes after
every candidate it ties with.
"""

from __future__ import annotations

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
        cand = generate(inp, self.ctx.attrs, self.cfg)
        x = compute(inp, cand, self.ctx)
        s = self.ranker.score(x[:, self._columns()]) if self.ranker is not None else np.zeros(len(cand.rows))
        tiebreak = np.arange(len(cand.rows))  # rows ascending: ties in item id order
        if demote is not None:
            tiebreak[cand.rows == demote] = len(cand.rows)
        order = np.lexsort((tiebreak, -s))
        return Ranked(cand.rows[order], s[order], cand, x)

    def _columns(self) -> list[int]:
        """The columns of `FEATURE_NAMES` the ranker was trained on, in its order (a model saved before a feature
        was added keeps working)."""
        assert self.ranker is not None
        unknown = [f for f in self.ranker.features if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"the ranker was trained on features this code does not compute: {unknown}")
        return [FEATURE_NAMES.index(f) for f in self.ranker.features]
