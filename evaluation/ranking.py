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

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from evaluation.common import category_batches, rows_to_scores
from evaluation.retrieval import RetrievalScorer
from feature_repo.sequences import history_arrays, last_search_queries
from feature_repo.splits import sample_rows
from models.catalog import Catalog
from models.common import to_ns
from models.ranker.candidates import SOURCES, CandidateConfig, Candidates, TargetInputs, generate
from models.ranker.features import FEATURE_NAMES, PUNCT, FeatureContext, compute, match_tokens
from models.ranker.model import LearnedRanker, RankerConfig, fit_ranker
from models.ranker.stage import Ranked, RankingStage
from models.text.tokenizer import normalize_text


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
        t_ns = to_ns(batch["target_ts"].to_numpy())
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
        rows = [None] * len(inputs) if demote is None else [int(cat_rows[d]) for d in demote]
        threads = self.stage.ranker.cfg.threads if self.stage.ranker is not None else 1  # the batch's one call
        ranked = self.stage.rank_many(inputs, rows, threads=threads)
        if demote is not None:  # the evaluation's targets: count the candidate recall as it goes
            for r, target in zip(ranked, rows, strict=True):
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
        return candidate_recall([self])[0]

    def mean_candidates(self) -> float:
        return candidate_recall([self])[1]

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        ranked, title_cos = self.ranked_rows(batch, cat_rows, demote)
        return rows_to_scores([r.rows for r in ranked], cat_rows, title_cos)  # (B, n_cat)


def candidate_recall(scorers: Sequence[RankerScorer]) -> tuple[dict[str, float], float]:
    """Over the targets these scorers ranked so far (one per rolling refit, or one): the share whose bought item
    was a candidate, per source and in the union, and the mean number of candidates."""
    seen = {k: sum(s._seen[k] for s in scorers) for k in ("targets", "candidates", *SOURCES, "union")}
    n = max(seen["targets"], 1)
    return {s: seen[s] / n for s in (*SOURCES, "union")}, seen["candidates"] / n


@dataclass
class Examples:
    """Training groups and the candidate recall they show."""

    groups: list[tuple[np.ndarray, np.ndarray]]  # (features (n, F), labels (n,)) per target
    positions: list[int]  # each group's target: its position in `targets`
    rows: list[np.ndarray]  # each group's candidates (catalog rows), in the order of its feature rows
    recall: dict[str, float]  # per source and "union": share of targets whose bought item is a candidate
    mean_candidates: float
    seconds: float


def ranker_examples(scorer: RankerScorer, targets: pd.DataFrame, progress: bool = False) -> Examples:
    """One LambdaMART group per target (label 1 on its bought item), and the candidate recall per source."""
    import time

    t0 = time.perf_counter()
    catalog = scorer.base.catalog
    target_rows = catalog.index_of(targets["target_item_id"])
    groups, n_cand, positions, rows = [], [], [], []
    hits = {s: 0 for s in (*SOURCES, "union")}
    bar = tqdm(total=len(targets), desc="ranker examples", disable=not progress, leave=False)
    for _, b, batch, cat_rows in category_batches(targets, catalog):
        inputs, _ = scorer.inputs(batch, cat_rows)
        for j, inp in enumerate(inputs):
            cand = generate(inp, scorer.ctx.attrs, scorer.cfg)
            x = compute(inp, cand, scorer.ctx)
            y = (cand.rows == target_rows[b[j]]).astype(np.float32)
            groups.append((x, y))
            positions.append(int(b[j]))
            rows.append(cand.rows)
            n_cand.append(len(cand.rows))
            at = np.flatnonzero(y)
            if len(at):
                hits["union"] += 1
                for s in SOURCES:
                    hits[s] += int(cand.ranks[s][at[0]] >= 0)
        bar.update(len(b))
    bar.close()
    n = max(len(targets), 1)
    return Examples(groups, positions, rows, {s: v / n for s, v in hits.items()}, float(np.mean(n_cand)) if n_cand else 0.0,
                    round(time.perf_counter() - t0, 2))




@dataclass
class TrainingSet:
    """The ranker's training groups: the targets' own (`ex`) and their navigational copies (`extra`, never held
    out; `source[j]`: the group of `ex` that copy j was made from)."""

    ex: Examples
    extra: Examples | None
    source: list[int]
    navigational: int


def training_set(scorer: RankerScorer, targets: pd.DataFrame, cfg: RankerConfig, progress: bool = False
                 ) -> TrainingSet:
    """The examples of `targets` (the validation targets), with `cfg.navigational` of them also copied as
    navigational examples."""
    ex = ranker_examples(scorer, targets, progress=progress)
    nav = navigational_targets(targets, scorer.base.catalog, cfg.navigational, cfg.seed)
    extra = ranker_examples(scorer, nav, progress=progress) if len(nav) else None
    group_of = {p: g for g, p in enumerate(ex.positions)}  # target position -> its group in ex.groups
    source = [group_of[int(nav["source"].iloc[p])] for p in extra.positions] if extra is not None else []
    return TrainingSet(ex, extra, source, len(nav))


def fit_training_set(ts: TrainingSet, cfg: RankerConfig, features: Sequence[str] = FEATURE_NAMES) -> LearnedRanker:
    """LambdaMART on a training set, over `features` (the columns of `FEATURE_NAMES` it keeps, in that order)."""
    cols = [FEATURE_NAMES.index(f) for f in features]
    pick = (lambda gs: gs) if list(features) == list(FEATURE_NAMES) else \
        (lambda gs: [(x[:, cols], y) for x, y in gs])
    model = fit_ranker(pick(ts.ex.groups), tuple(features), cfg,
                       extra=pick(ts.extra.groups) if ts.extra is not None else [], extra_source=ts.source)
    model.info |= {"navigational_targets": ts.navigational}
    return model


def ranker_targets(targets: pd.DataFrame, cfg: RankerConfig) -> pd.DataFrame:
    """The validation targets a ranker trains on: every one, or past `cfg.max_targets` a seeded uniform sample of
    that many (seed `cfg.seed`), in their order."""
    return sample_rows(targets, cfg.max_targets, cfg.seed)


def fit_on_targets(scorer: RankerScorer, targets: pd.DataFrame, cfg: RankerConfig, progress: bool = False
                   ) -> tuple[LearnedRanker, Examples]:
    """The ranker fitted on `targets` (the validation targets), with `cfg.navigational` of them also copied as
    navigational examples (extra training groups, never held out), and the examples of `targets` themselves."""
    ts = training_set(scorer, targets, cfg, progress)
    return fit_training_set(ts, cfg), ts.ex


def product_name(title: str, colour: str | None, size: str | None) -> str:
    """A title without its colour and size words: the name a shopper types for a product (any of its variants)."""
    drop = set(match_tokens(str(colour or ""))) | set(match_tokens(str(size or "")))
    return " ".join(w for w in normalize_text(str(title)).split() if (t := w.strip(PUNCT)) and t not in drop)


def navigational_targets(targets: pd.DataFrame, catalog: Catalog, share: float, seed: int = 0) -> pd.DataFrame:
    """Training copies of a seeded `share` of `targets` in which the shopper names the product before buying it: one
    more search, 1 ms before the target's time, whose query is the bought item's exact title (half of the copies) or
    its name without colour and size (the other half); half of each also lose the rest of their history (a new
    shopper). Logged searches rarely name a product (synthetic and real queries describe one), so without these
    the ranker never sees a query that names an item, and it learns nothing of what such a query means. Only for
    training: the evaluation's targets are never augmented."""
    if share <= 0 or not len(targets):
        return targets.iloc[:0].copy()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(targets), max(1, round(share * len(targets))), replace=False))
    pick = targets.iloc[chosen].copy()
    pick["source"] = chosen  # the position in `targets` each copy was made from
    items = catalog.items.set_index("item_id")
    get = lambda c: items[c] if c in items else pd.Series(None, index=items.index, dtype=object)  # noqa: E731
    it = pd.DataFrame({c: get(c).reindex(pick["target_item_id"]).to_numpy() for c in ("title", "color", "size")})
    kind = rng.permutation(len(pick)) % 4  # each of the four kinds for a quarter of the copies
    named, alone = kind % 2 == 1, kind // 2 == 1
    cols = ("seq_actions", "seq_item_ids", "seq_queries", "seq_search_ids", "seq_timestamps")
    out = {c: [] for c in cols}
    for j, row in enumerate(pick.itertuples(index=False)):
        title, colour, size = it.iloc[j]
        query = product_name(title, colour, size) if named[j] else str(title)
        ms = int(pd.Timestamp(row.target_ts).value // 1_000_000) - 1
        keep = not alone[j]
        for c, v in zip(cols, ("search", "", query, -1, ms), strict=True):
            seq = list(getattr(row, c)) if keep else []
            out[c].append(np.asarray(seq + [v], dtype=np.int64 if c in ("seq_search_ids", "seq_timestamps") else object))
    for c in cols:
        pick[c] = out[c]
    pick["n_history"] = [len(a) for a in out["seq_actions"]]
    pick["user_id"] = pick["user_id"].astype(str) + "#nav"
    named_something = np.array([bool(match_tokens(q[-1])) for q in out["seq_queries"]], bool)
    return pick[named_something & it["title"].notna().to_numpy()].reset_index(drop=True)  # a query that names it


def top_lists(ex: Examples, scores: Sequence[np.ndarray], targets: pd.DataFrame, catalog: Catalog, n: int
              ) -> pd.DataFrame:
    """Each example target's top `n` candidates by `scores` (aligned with `ex.groups`; the ranker's out-of-fold
    scores on the validation targets), best first, the bought item after every candidate it ties with: one row per
    target with its position in `targets`, user, time, bought item, the listed item ids and their scores, and
    whether the bought item is among them."""
    target_rows = catalog.index_of(targets["target_item_id"])
    out = []
    for pos, rows, s in zip(ex.positions, ex.rows, scores, strict=True):
        tiebreak = np.arange(len(rows))
        tiebreak[rows == target_rows[pos]] = len(rows)
        order = np.lexsort((tiebreak, -s))[:n]
        t = targets.iloc[pos]
        out.append({"position": pos, "user_id": str(t["user_id"]), "target_ts": t["target_ts"],
                    "target_item_id": str(t["target_item_id"]), "items": catalog.item_ids[rows[order]].tolist(),
                    "scores": s[order].astype(np.float64).tolist(), "hit": bool(target_rows[pos] in rows[order])})
    return pd.DataFrame(out, columns=["position", "user_id", "target_ts", "target_item_id", "items", "scores", "hit"])
