"""The learned ranking stage on the evaluation path: every retrieval source -> candidates -> features -> LambdaMART.

`RankerScorer` is an evaluation `Scorer`. Per batch it runs the retrieval sources once (`RetrievalScorer.sources`:
the ID list, the title-cosine list, the memory's products, the query vectors), adds the organic results of each
user's recent searches (`SearchLog`) and their own items, and turns each target into a `TargetInputs`. Then
`models.ranker.candidates.generate` and `models.ranker.features.compute` (the same functions serving calls) give
the candidates and their features, and the `LearnedRanker` orders them. The ranked candidates score above every
other item, in that order; the rest of the category follows by title cosine, as in `RetrievalScorer`.

Seen items are not removed: they are candidates with `seen_count` / `bought_before` features, so the ranker learns
from each dataset whether people re-buy. Ties in the ranker's score are ordered by item id, except that the
evaluation's target goes after every candidate it ties with (a constant ranker puts it last among the candidates).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from models.evaluation import Catalog
from models.ranker.candidates import SOURCES, CandidateConfig, Candidates, SearchLog, TargetInputs, generate
from models.ranker.features import FEATURE_NAMES, FeatureContext, compute
from models.ranker.model import LearnedRanker
from serving.retrieval import RetrievalScorer, _ns, last_search_queries, list_scores


def history_arrays(actions: list, item_ids: list, timestamps: list, index: pd.Index
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clicked/purchased catalog rows of one history (oldest first), whether each was a purchase, and its ms."""
    picked = [(i, a == "purchase", int(t)) for a, i, t in zip(actions, item_ids, timestamps, strict=True)
              if a in ("click", "purchase") and i]
    if not picked:
        return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
    rows = index.get_indexer(np.asarray([p[0] for p in picked], dtype=object))
    keep = rows >= 0
    return (rows[keep].astype(np.int64), np.array([p[1] for p in picked], bool)[keep],
            np.array([p[2] for p in picked], np.int64)[keep])


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

    def rank(self, inp: TargetInputs, last_row: int | None = None) -> Ranked:
        """Candidates, features and the ranker's order for one target; `last_row` goes last among its ties."""
        cand = generate(inp, self.ctx.attrs, self.cfg)
        x = compute(inp, cand, self.ctx)
        s = self.ranker.score(x[:, self._columns()]) if self.ranker is not None else np.zeros(len(cand.rows))
        tiebreak = np.arange(len(cand.rows))  # rows ascending: ties in item id order
        if last_row is not None:
            tiebreak[cand.rows == last_row] = len(cand.rows)
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


@dataclass
class RankerScorer:
    """Evaluation `Scorer` of the ranking stage (see the module docstring)."""

    base: RetrievalScorer
    stage: RankingStage
    tie_aware = True

    @property
    def ctx(self) -> FeatureContext:
        return self.stage.ctx

    @property
    def cfg(self) -> CandidateConfig:
        return self.stage.cfg

    @property
    def ranker(self) -> LearnedRanker | None:
        return self.stage.ranker

    @ranker.setter
    def ranker(self, model: LearnedRanker | None) -> None:
        self.stage.ranker = model

    def __post_init__(self) -> None:
        # The ranking stage reads the seen items and the memory's products as separate sources.
        self.base.cfg = replace(self.base.cfg, exclude_seen=False, title_list="cosine",
                                k=max(self.cfg.id_k, self.cfg.title_k))
        self.index = pd.Index(self.base.catalog.item_ids)
        self._seen = {"targets": 0, "candidates": 0, **{s: 0 for s in (*SOURCES, "union")}}

    def inputs(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
               ) -> tuple[list[TargetInputs], np.ndarray]:
        """Each target's `TargetInputs`, and the title cosine matrix (B, n_cat)."""
        src = self.base.sources(batch, cat_rows, demote)
        t_ns = _ns(batch["target_ts"].to_numpy())
        cat = self.ctx.attrs.category[cat_rows[0]]
        queries = last_search_queries(batch["seq_actions"], batch["seq_queries"])
        out = []
        for b, (acts, items, sids, ts) in enumerate(zip(batch["seq_actions"], batch["seq_item_ids"],
                                                        batch["seq_search_ids"], batch["seq_timestamps"], strict=True)):
            acts, items, ts = list(acts), list(items), list(ts)
            hist, buy, ms = history_arrays(acts, items, ts, self.index)
            res, res_ms = self.stage.searches.recent(acts, list(sids), ts, self.cfg.searches)
            cols = lambda c: cat_rows[c[c >= 0]]  # noqa: E731
            out.append(TargetInputs(
                category=int(cat), t_ns=int(t_ns[b]), hist_rows=hist, hist_buy=buy, hist_ms=ms,
                # No search and no history: no title query, so no title list (every cosine would tie), as serving.
                id_rows=cols(src.id_top[b]),
                title_rows=cols(src.title_top[b]) if src.title_query[b].any() else np.zeros(0, np.int64),
                memory_rows=cat_rows[src.memory_cols[b]] if src.memory_cols is not None else np.zeros(0, np.int64),
                searches=res, search_ms=res_ms, query=queries[b],
                id_query=src.id_query[b] if len(hist) else None, title_query=src.title_query[b],
                popular_rows=self.ctx.popular(int(cat), int(t_ns[b]), self.cfg.popular)))
        return out, src.title_cos

    def ranked_rows(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
                    ) -> tuple[list[Ranked], np.ndarray]:
        inputs, title_cos = self.inputs(batch, cat_rows, demote)
        last = [None] * len(inputs) if demote is None else [int(cat_rows[d]) for d in demote]
        ranked = [self.stage.rank(inp, row) for inp, row in zip(inputs, last, strict=True)]
        if demote is not None:  # the evaluation's targets: count the candidate recall as it goes
            for r, target in zip(ranked, last, strict=True):
                self._count(r.candidates, target)
        return ranked, title_cos

    def _count(self, cand: Candidates, target: int) -> None:
        self._seen["targets"] += 1
        self._seen["candidates"] += len(cand.rows)
        at = np.flatnonzero(cand.rows == target)
        if len(at):
            self._seen["union"] += 1
            for s in SOURCES:
                self._seen[s] += int(cand.ranks[s][at[0]] >= 0)

    def recall(self) -> dict[str, float]:
        """Share of the targets scored so far (by the evaluation) whose bought item was a candidate, per source."""
        n = max(self._seen["targets"], 1)
        return {s: self._seen[s] / n for s in (*SOURCES, "union")}

    def mean_candidates(self) -> float:
        return self._seen["candidates"] / max(self._seen["targets"], 1)

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        ranked, title_cos = self.ranked_rows(batch, cat_rows, demote)
        cols = [np.searchsorted(cat_rows, r.rows).tolist() for r in ranked]  # cat_rows ascending (Catalog.rows)
        return list_scores(cols, title_cos)  # (B, n_cat)


def batches(targets: pd.DataFrame, catalog: Catalog, batch_size: int = 256
            ) -> Iterator[tuple[np.ndarray, pd.DataFrame, np.ndarray]]:
    """(target positions, batch, category rows) per category and batch, as `evaluate` iterates."""
    for cat, idx in targets.groupby("category", sort=True).indices.items():
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            yield b, targets.iloc[b], catalog.rows[cat]


@dataclass
class Examples:
    """Training groups and the candidate recall they show."""

    groups: list[tuple[np.ndarray, np.ndarray]]  # (features (n, F), labels (n,)) per target
    recall: dict[str, float]  # per source and "union": share of targets whose bought item is a candidate
    mean_candidates: float
    seconds: float


def ranker_examples(scorer: RankerScorer, targets: pd.DataFrame, progress: bool = False) -> Examples:
    """One LambdaMART group per target (label 1 on its bought item), and the candidate recall per source."""
    import time

    t0 = time.perf_counter()
    catalog = scorer.base.catalog
    target_rows = catalog.index_of(targets["target_item_id"])
    groups, n_cand = [], []
    hits = {s: 0 for s in (*SOURCES, "union")}
    bar = tqdm(total=len(targets), desc="ranker examples", disable=not progress, leave=False)
    for b, batch, cat_rows in batches(targets, catalog):
        inputs, _ = scorer.inputs(batch, cat_rows)
        for j, inp in enumerate(inputs):
            cand = generate(inp, scorer.ctx.attrs, scorer.cfg)
            x = compute(inp, cand, scorer.ctx)
            y = (cand.rows == target_rows[b[j]]).astype(np.float32)
            groups.append((x, y))
            n_cand.append(len(cand.rows))
            at = np.flatnonzero(y)
            if len(at):
                hits["union"] += 1
                for s in SOURCES:
                    hits[s] += int(cand.ranks[s][at[0]] >= 0)
        bar.update(len(b))
    bar.close()
    n = max(len(targets), 1)
    return Examples(groups, {s: v / n for s, v in hits.items()}, float(np.mean(n_cand)) if n_cand else 0.0,
                    round(time.perf_counter() - t0, 2))


def load_ranking_stage(root: Path, workdir: Path, items: pd.DataFrame, ckpt: Any, encoder: Any
                       ) -> tuple[RankingStage | None, str]:
    """The learned ranking stage of a bundle (None and why when it has none): its ranker, the catalog's features,
    the activity windows and the search log (the workdir's, like the popularity fallback)."""
    from feature_repo.activity import ActivityTable
    from models.variants import ItemAttributes
    from serving.id_index import item_vectors
    from serving.registry import file_digest
    from serving.retrieval import l2_normalize

    model_dir = root / "models" / "ranker"
    needed = [model_dir / "ranker.json", workdir / "features" / "activity_windows.parquet",
              workdir / "canonical" / "search_results.parquet"]
    if missing := [str(p) for p in needed if not p.exists()]:
        return None, f"none (missing {', '.join(missing)})"
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)  # OnlineRetriever's row order
    id_table = l2_normalize(item_vectors(ckpt.model, ckpt.vocab, items["item_id"].to_numpy()))  # (n, d)
    titles = items["title"].fillna("").astype(str).to_numpy()
    cache: dict[int, np.ndarray] = {}

    def title_vectors(rows: np.ndarray) -> np.ndarray:
        todo = [r for r in dict.fromkeys(rows.tolist()) if r not in cache]
        if todo:
            cache.update(zip(todo, l2_normalize(encoder.encode(list(titles[todo]))), strict=True))
        return np.stack([cache[r] for r in rows.tolist()]) if len(rows) else np.zeros((0, encoder.dim), np.float32)

    ctx = FeatureContext(ItemAttributes.from_items(items), items, ActivityTable.read(needed[1]),
                         id_vectors=lambda rows: id_table[rows], title_vectors=title_vectors)
    search_log = SearchLog(pd.read_parquet(needed[2], columns=["search_id", "item_id", "position"]),
                           pd.Index(items["item_id"]))
    return RankingStage(ctx, search_log, LearnedRanker.load(model_dir)), f"lambdamart@{file_digest(model_dir)}"



__all__ = ["FEATURE_NAMES", "Examples", "Ranked", "RankerScorer", "RankingStage", "history_arrays",
           "load_ranking_stage", "ranker_examples"]
