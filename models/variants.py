"""Variant selection: which colour x size variant of a retrieved product family the user will buy.

Every colour x size variant is its own catalog item, but retrieval (the ID list, the title list, the query memory,
mixup) finds product *families* far more often than the exact variant: on medium-s0 the purchased item's family is in
the top 10 organic results of the user's last search for 62% of targets, the item itself for 28%. What the history
says about colour and size closes much of that gap.

`VariantRanker` re-ranks a ranked list of catalog rows (any source: mixup, title-only, ID-only, an LLM's mapped
output). The candidates are every variant, released by the target time, of the list's first `families` families.
Each candidate gets a score w . x from the features in `FEATURES`, which read only the target's own history (so
nothing after the target time), and candidates are ordered by it; the rest of the list follows in its own order.
The weights come from a conditional logit (softmax over a target's candidates, the bought item as the label) fitted
on validation targets by `fit_variant_ranker`; `DEFAULT_WEIGHTS` are hand-set for use without a fit.

Deliberately not a feature: "this exact variant was clicked before". Clicks on the item a session finally buys are
filtered out of the logs (the paper did the same), so a fitted weight would learn the filter, not the shopper.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

FEATURES = (
    "family_rank",  # log(1 + rank of the candidate's family among the list's families), 0 for the first family
    "listed",  # 1 if the candidate itself is in the list
    "listed_rank",  # log(1 + its own list position) if listed, else 0
    "family_variants",  # log(variants of the family released by the target time)
    "size_subcategory",  # log(1 + history items of the same subcategory and size)
    "size_category",  # log(1 + history items of the same category and size)
    "size_mismatch",  # 1 if the history has items of the subcategory but none of this size
    "subcategory_items",  # log(1 + history items of the same subcategory)
    "colour",  # log(1 + history items of this colour)
    "colour_recent",  # log(1 + items of this colour among the last `recent` history items)
    "family_colour",  # log(1 + history items of the same family and colour, the candidate itself excluded)
    "family_size",  # log(1 + history items of the same family and size, the candidate itself excluded)
    "family_items",  # log(1 + history items of the same family)
)
DEFAULT_WEIGHTS = {
    "family_rank": -1.0, "listed": 0.5, "listed_rank": -0.2, "family_variants": -0.5,
    "size_subcategory": 1.0, "size_category": 0.3, "size_mismatch": -1.0, "subcategory_items": 0.5,
    "colour": 0.3, "colour_recent": 0.3, "family_colour": 0.5, "family_size": 0.3, "family_items": 0.5,
}


@dataclass(frozen=True)
class VariantConfig:
    """Candidate generation and fitting."""

    families: int = 20  # leading families of the list whose released variants are all candidates
    recent: int = 5  # last history items counted by `colour_recent`
    l2: float = 1e-3  # ridge penalty on the weights when fitting
    max_iter: int = 200  # L-BFGS iterations when fitting
    # At most this many validation targets fit it (a seeded sample, seed 0; 0: every one). Its examples cost targets
    # x category (each target's list is cut from its whole category), so the targets are capped as the catalog
    # grows: on medium-s0 x 4 every one of the 5,972 took 125 s against 14 s for medium-s0's 1,493.
    max_targets: int = 2_000


@dataclass(frozen=True)
class ItemAttributes:
    """Integer codes of the catalog's variant attributes, in catalog row order (`Catalog.items`)."""

    family: np.ndarray  # (n,) int64
    size: np.ndarray  # (n,)
    colour: np.ndarray  # (n,)
    subcategory: np.ndarray  # (n,)
    category: np.ndarray  # (n,)
    created_ns: np.ndarray  # (n,) int64 epoch ns; items without created_at count as always released
    family_ptr: np.ndarray  # (n_families + 1,) CSR offsets into family_rows
    family_rows: np.ndarray  # (n,) catalog rows grouped by family code

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> ItemAttributes:
        """Codes from a catalog frame (item_id order as `Catalog.items`); missing attributes get their own code."""

        def code(col: str) -> np.ndarray:
            return pd.factorize(items[col].fillna("\0missing").astype(str), sort=True)[0].astype(np.int64)

        family = code("family_id") if "family_id" in items else np.arange(len(items), dtype=np.int64)
        # NaT becomes int64 min: an item without created_at counts as always released.
        created_ns = (pd.DatetimeIndex(pd.to_datetime(items["created_at"], utc=True)).as_unit("ns").asi8.copy()
                      if "created_at" in items else np.full(len(items), np.iinfo(np.int64).min, np.int64))
        order = np.argsort(family, kind="stable")
        ptr = np.searchsorted(family[order], np.arange(family.max() + 2 if len(family) else 1))
        return cls(family=family, size=code("size"), colour=code("color"), subcategory=code("subcategory"),
                   category=code("category"), created_ns=np.asarray(created_ns, np.int64),
                   family_ptr=ptr.astype(np.int64), family_rows=order.astype(np.int64))

    def variants(self, family: int) -> np.ndarray:
        """Catalog rows of one family, ascending."""
        return self.family_rows[self.family_ptr[family]:self.family_ptr[family + 1]]


HISTORY_FEATURES = FEATURES[4:]  # the features read from the history alone (no list)


def history_features(cand: np.ndarray, hist_rows: np.ndarray, attrs: ItemAttributes,
                     cfg: VariantConfig = VariantConfig()) -> np.ndarray:
    """`HISTORY_FEATURES` of candidate rows against the target's history (oldest first). (n, 9) float32."""
    cand = np.asarray(cand, np.int64)
    h = np.asarray(hist_rows, np.int64)  # (H,)
    r = h[-cfg.recent:] if cfg.recent > 0 else h[:0]

    def count(cand_attr: Sequence[np.ndarray], hist_attr: Sequence[np.ndarray]) -> np.ndarray:
        """Per candidate, history items matching it on every given attribute. (n,)"""
        match = np.ones((len(cand), len(hist_attr[0])), bool)  # (n, H)
        for c, a in zip(cand_attr, hist_attr, strict=True):
            match &= c[:, None] == a[None, :]
        return match.sum(axis=1).astype(np.float32)

    f, s, k, u, g = (attrs.family[cand], attrs.size[cand], attrs.colour[cand], attrs.subcategory[cand],
                     attrs.category[cand])
    hf, hs, hk, hu, hg = (attrs.family[h], attrs.size[h], attrs.colour[h], attrs.subcategory[h], attrs.category[h])
    size_sub = count([u, s], [hu, hs])
    same = count([cand], [h])  # the candidate itself in the history (not a feature: see the module docstring)
    in_sub = count([u], [hu])
    return np.stack([
        np.log1p(size_sub),
        np.log1p(count([g, s], [hg, hs])),
        ((in_sub > 0) & (size_sub == 0)).astype(np.float32),
        np.log1p(in_sub),
        np.log1p(count([k], [hk])),
        np.log1p(count([k], [attrs.colour[r]])),
        np.log1p(count([f, k], [hf, hk]) - same),
        np.log1p(count([f, s], [hf, hs]) - same),
        np.log1p(count([f], [hf])),
    ], axis=1).astype(np.float32)  # (n, 9)


def candidate_features(list_rows: np.ndarray, hist_rows: np.ndarray, t_ns: int, attrs: ItemAttributes,
                       cfg: VariantConfig = VariantConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (catalog rows) and their features (n, len(FEATURES)) for one target.

    list_rows: the ranked list's catalog rows, best first (repeats ignored). hist_rows: the target's history items
    (clicks and purchases, oldest first), all strictly before t_ns. Candidates are ordered by family rank, then
    list position, then catalog row.
    """
    list_rows = pd.unique(np.asarray(list_rows, np.int64))  # (L,) first occurrence kept
    fams = pd.unique(attrs.family[list_rows])[: cfg.families]  # (F,) families in list order
    if len(fams) == 0:
        return np.zeros(0, np.int64), np.zeros((0, len(FEATURES)), np.float32)
    # A family's released variants; a listed row released after t stays (the list put it there).
    variants = [v[(attrs.created_ns[v] <= t_ns) | np.isin(v, list_rows)] for v in map(attrs.variants, fams)]
    fam_rank = np.concatenate([np.full(len(v), r) for r, v in enumerate(variants)])  # (n,)
    n_var = np.concatenate([np.full(len(v), len(v)) for v in variants])  # (n,) >= 1: the family's listed row
    cand = np.concatenate(variants)  # (n,)
    pos = pd.Index(list_rows).get_indexer(cand)  # (n,) -1 if not listed
    listed = pos >= 0
    x = np.concatenate([
        np.stack([np.log1p(fam_rank), listed.astype(np.float32), np.where(listed, np.log1p(np.maximum(pos, 0)), 0.0),
                  np.log(n_var)], axis=1),
        history_features(cand, hist_rows, attrs, cfg),
    ], axis=1).astype(np.float32)  # (n, F)
    order = np.lexsort((cand, np.where(listed, pos, len(list_rows)), fam_rank))
    return cand[order], x[order]


@dataclass
class VariantRanker:
    """Linear scorer over `FEATURES`; `rerank` puts the list's families' variants in score order."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    cfg: VariantConfig = VariantConfig()
    fit_info: dict = field(default_factory=dict)  # examples, skipped, log-likelihood before/after, seconds

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown variant features {sorted(unknown)}; known: {FEATURES}")

    @property
    def w(self) -> np.ndarray:
        return np.array([self.weights.get(name, 0.0) for name in FEATURES], np.float32)  # (F,)

    def rerank(self, list_rows: np.ndarray, hist_rows: np.ndarray, t_ns: int, attrs: ItemAttributes,
               demote: int | None = None) -> np.ndarray:
        """The candidates by descending score, then the rest of the list.

        Equal scores are ordered by family rank, then list position, then catalog row (item id), except that
        `demote` (the evaluation's target) goes after every candidate it ties with on score, family rank and list
        position: only the item-id order is arbitrary, and it never favours the target.
        """
        list_rows = pd.unique(np.asarray(list_rows, np.int64))
        cand, x = candidate_features(list_rows, hist_rows, t_ns, attrs, self.cfg)
        if len(cand) == 0:
            return list_rows
        # Candidates come ordered by (family rank, list position, row); `group` numbers the (family rank, list
        # position) runs, read off the features that encode them exactly.
        key = x[:, [FEATURES.index("family_rank"), FEATURES.index("listed"), FEATURES.index("listed_rank")]]  # (n, 3)
        group = np.concatenate([[0], np.cumsum((np.diff(key, axis=0) != 0).any(axis=1))])  # (n,)
        tiebreak = np.arange(len(cand))  # (n,) within a group: catalog row order
        if demote is not None:
            tiebreak[cand == demote] = len(cand)
        ranked = cand[np.lexsort((tiebreak, group, -(x @ self.w)))]  # (n,)
        rest = list_rows[~np.isin(list_rows, ranked)]
        return np.concatenate([ranked, rest])

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"weights": self.weights, "cfg": asdict(self.cfg), "fit_info": self.fit_info},
                                   indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: Path) -> VariantRanker:
        d = json.loads(Path(path).read_text())
        return cls(weights=d["weights"], cfg=VariantConfig(**d["cfg"]), fit_info=d.get("fit_info", {}))


def conditional_logit_nll(w: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled candidate under a softmax over each example's candidates.

    w: (F,), x: (E, N, F) padded features, mask: (E, N) True for real candidates, target: (E,) label index.
    """
    logits = (x @ w).masked_fill(~mask, float("-inf"))  # (E, N)
    return -(logits.gather(1, target[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)).mean()


def fit_variant_ranker(examples: Sequence[tuple[np.ndarray, np.ndarray, int]], cfg: VariantConfig = VariantConfig(),
                       init: dict[str, float] | None = None) -> VariantRanker:
    """Fit the weights by a ridge-penalised conditional logit on (candidates, features, bought row) examples.

    Examples whose bought row is not a candidate carry no signal for the ordering and are skipped (counted in
    `fit_info["skipped"]`). With no usable example the ranker keeps `init` (default `DEFAULT_WEIGHTS`).
    """
    import time

    t0 = time.perf_counter()
    init = dict(DEFAULT_WEIGHTS if init is None else init)
    usable = []
    for cand, x, target in examples:
        hit = np.flatnonzero(cand == target)
        if len(hit):
            usable.append((x, int(hit[0])))
    info = {"examples": len(examples), "used": len(usable), "skipped": len(examples) - len(usable)}
    if not usable:
        return VariantRanker(init, cfg, {**info, "fitted": False})
    n_max = max(len(x) for x, _ in usable)
    xs = np.zeros((len(usable), n_max, len(FEATURES)), np.float32)  # (E, N, F)
    mask = np.zeros((len(usable), n_max), bool)  # (E, N)
    for e, (x, _) in enumerate(usable):
        xs[e, : len(x)] = x
        mask[e, : len(x)] = True
    x_t, m_t = torch.from_numpy(xs), torch.from_numpy(mask)
    y_t = torch.tensor([t for _, t in usable])  # (E,)
    w = torch.tensor([init.get(n, 0.0) for n in FEATURES], dtype=torch.float32, requires_grad=True)  # (F,)
    with torch.no_grad():
        before = float(conditional_logit_nll(w, x_t, m_t, y_t))
    opt = torch.optim.LBFGS([w], max_iter=cfg.max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = conditional_logit_nll(w, x_t, m_t, y_t) + cfg.l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        after = float(conditional_logit_nll(w, x_t, m_t, y_t))
    weights = {n: round(float(v), 6) for n, v in zip(FEATURES, w.detach().numpy(), strict=True)}
    info |= {"fitted": True, "nll_before": before, "nll_after": after, "mean_candidates": float(mask.sum(1).mean()),
             "seconds": round(time.perf_counter() - t0, 2)}
    return VariantRanker(weights, cfg, info)
