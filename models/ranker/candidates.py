"""Candidate generation for the learned ranking stage: the union of every retrieval source, with each source's rank.

Per target (or request), in its category, released by its time:
- `id`: the ID model's top list (cosine of the sequence representation against the item table);
- `title`: the title model's top list (cosine of the title query vector), without the memory's products;
- `memory`: the query-product memory's products for the last search, in the memory's order;
- `search`: the organic results of the user's last `searches` searches (latest first), by position;
- `history`: the user's own clicked and purchased items (seen items are candidates with a flag, not removed);
- `popularity`: the category's most interacted-with items in the 30 days before the target's day (what a shopper
  with no history and no search still gets; `FeatureContext.popular`);
- `variant`: every released colour x size variant of the families of the leading items of those sources.

`TargetInputs` holds everything a target brings (all from before its time); the evaluation builds it from the
retrieval lists and the serving path from its Qdrant searches, and `generate` is the same code for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.variants import ItemAttributes

SOURCES = ("id", "title", "memory", "search", "history", "popularity", "variant")


@dataclass(frozen=True)
class CandidateConfig:
    id_k: int = 30  # leading items of the ID list
    title_k: int = 30  # leading items of the title-cosine list
    searches: int = 3  # the user's most recent searches whose organic results are candidates
    history: int = 30  # the user's most recent distinct history items
    popular: int = 30  # the category's most popular items before the target's day
    variant_id_k: int = 5  # families of the ID list's first items whose variants are added
    variant_title_k: int = 10  # families of the title list's first items whose variants are added
    variant_search_k: int = 15  # families of each recent search's first results whose variants are added
    max_family_variants: int = 60  # larger families add only the variants in a size or colour the user had
    # (for that subcategory) or that the sources listed


@dataclass
class TargetInputs:
    """What one target brings to the ranking stage; rows are catalog rows (`Catalog.items` order)."""

    category: int  # category code (`ItemAttributes.category`)
    t_ns: int  # target / request time, epoch ns
    hist_rows: np.ndarray  # (H,) clicked/purchased items, oldest first, all strictly before t
    hist_buy: np.ndarray  # (H,) bool: a purchase
    hist_ms: np.ndarray  # (H,) int64 epoch ms of each
    id_rows: np.ndarray  # (K,) ID list, best first (empty without history)
    title_rows: np.ndarray  # (K,) title-cosine list, best first
    memory_rows: np.ndarray  # (M,) memory products for the last search, in order
    searches: list[np.ndarray] = field(default_factory=list)  # latest first: each search's result rows by position
    search_ms: list[int] = field(default_factory=list)  # each of those searches' epoch ms
    query: str | None = None  # the last search's text
    id_query: np.ndarray | None = None  # (d_id,) unit ID query vector
    title_query: np.ndarray | None = None  # (d_title,) unit title query vector
    popular_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (P,) most popular first


@dataclass
class Candidates:
    rows: np.ndarray  # (n,) catalog rows, ascending (item id order)
    ranks: dict[str, np.ndarray]  # source -> (n,) 0-based rank in that source, -1 if absent


def _first_rank(rows: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Per row of `rows` (sorted, unique, holding every row of `src`), its first position in `src`; -1 if absent.
    (n,) int64"""
    out = np.full(len(rows), -1, np.int64)
    if len(src):
        u, first = np.unique(np.asarray(src, np.int64), return_index=True)
        out[np.searchsorted(rows, u)] = first
    return out


def _best_rank(rows: np.ndarray, lists: Sequence[np.ndarray]) -> np.ndarray:
    """Per row of `rows` (sorted, unique, holding every row of `lists`), its best (smallest) position over the
    lists; -1 if in none. (n,) int64"""
    lists = [np.asarray(x, np.int64) for x in lists if len(x)]
    if not lists:
        return np.full(len(rows), -1, np.int64)
    big = np.iinfo(np.int64).max
    best = np.full(len(rows), big, np.int64)
    np.minimum.at(best, np.searchsorted(rows, np.concatenate(lists)), np.concatenate([np.arange(len(x)) for x in lists]))
    return np.where(best == big, -1, best)


def generate(inp: TargetInputs, attrs: ItemAttributes, cfg: CandidateConfig = CandidateConfig()) -> Candidates:
    """The candidate union of one target (see the module docstring), with each source's rank."""
    eligible = lambda rows: rows[(attrs.category[rows] == inp.category) & (attrs.created_ns[rows] <= inp.t_ns)]  # noqa: E731
    hist = np.asarray(inp.hist_rows, np.int64)
    recent_hist = np.asarray(list(dict.fromkeys(hist[::-1].tolist()))[: cfg.history], np.int64)  # latest first
    lists = {
        "id": eligible(np.asarray(inp.id_rows, np.int64)[: cfg.id_k]),
        "title": eligible(np.asarray(inp.title_rows, np.int64)[: cfg.title_k]),
        "memory": eligible(np.asarray(inp.memory_rows, np.int64)),
        "history": recent_hist[attrs.category[recent_hist] == inp.category] if len(recent_hist) else recent_hist,
        "popularity": eligible(np.asarray(inp.popular_rows, np.int64)[: cfg.popular]),
    }
    searches = [eligible(np.asarray(s, np.int64)) for s in inp.searches[: cfg.searches]]
    seeds = [lists["id"][: cfg.variant_id_k], lists["title"][: cfg.variant_title_k], lists["memory"],
             lists["history"], *[s[: cfg.variant_search_k] for s in searches]]
    listed = np.unique(np.concatenate([*lists.values(), *searches, np.zeros(0, np.int64)]))
    fams = np.unique(attrs.family[np.concatenate(seeds)]) if sum(map(len, seeds)) else np.zeros(0, np.int64)
    variants = []
    for f in fams.tolist():
        v = attrs.variants(f)
        v = v[(attrs.created_ns[v] <= inp.t_ns) & (attrs.category[v] == inp.category)]
        if len(v) > cfg.max_family_variants:  # a big family: the sizes and colours this user would look at
            sub = attrs.subcategory[v[0]]
            own = hist[attrs.subcategory[hist] == sub] if len(hist) else hist
            shown = v[np.isin(v, listed)]
            v = v[np.isin(attrs.size[v], attrs.size[own]) | np.isin(attrs.colour[v], attrs.colour[shown])
                  | np.isin(v, listed)]
        variants.append(v)
    rows = np.unique(np.concatenate([listed, *variants]).astype(np.int64))  # (n,)
    ranks = {name: _first_rank(rows, src) for name, src in lists.items()}
    ranks["search"] = _best_rank(rows, searches)
    in_variants = np.isin(rows, np.concatenate(variants)) if variants else np.zeros(len(rows), bool)
    ranks["variant"] = np.where(in_variants, 0, -1).astype(np.int64)
    return Candidates(rows=rows, ranks=ranks)


class SearchLog:
    """The organic results of every logged search: search id -> catalog rows in position order."""

    def __init__(self, search_results: pd.DataFrame, item_index: pd.Index) -> None:
        sr = search_results.sort_values(["search_id", "position"], kind="stable")
        rows = item_index.get_indexer(sr["item_id"].to_numpy())
        sid = sr["search_id"].to_numpy()
        keep = rows >= 0
        sid, rows = sid[keep], rows[keep].astype(np.int64)
        cuts = np.flatnonzero(np.diff(sid)) + 1
        self.results: dict[int, np.ndarray] = (
            dict(zip(sid[np.r_[0, cuts]].tolist(), np.split(rows, cuts), strict=True)) if len(sid) else {})

    def __len__(self) -> int:
        return len(self.results)

    def recent(self, actions: Sequence[str], search_ids: Sequence[int | None], timestamps_ms: Sequence[int],
               n: int) -> tuple[list[np.ndarray], list[int]]:
        """The results and epoch ms of a history's last `n` logged searches, latest first."""
        out, ms = [], []
        for a, s, t in zip(reversed(list(actions)), reversed(list(search_ids)), reversed(list(timestamps_ms)),
                           strict=True):
            if a == "search" and s is not None and int(s) in self.results:
                out.append(self.results[int(s)])
                ms.append(int(t))
                if len(out) == n:
                    break
        return out, ms
