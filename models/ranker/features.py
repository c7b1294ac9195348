"""The ranking stage's features, declared once (`FEATURES`) and computed by one function for evaluation and serving.

Every feature of a candidate is computed from the target's `TargetInputs` (its history, lists and searches, all
strictly before its time) and from catalog facts known at that time: attributes, release dates, and the activity
windows of `ActivityTable` as of the target's day. Missing values (a candidate absent from a source, a user without
a search) are NaN: LightGBM learns a direction for them. Cosines are rounded to 5 decimals so that the evaluation's
matrix products and serving's per-request products give the same tree splits.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.activity import COUNTS, DAY_MS, TREND_ATTRIBUTES, ActivityTable
from feature_repo.layout import cache_root
from models.ranker.candidates import Candidates, TargetInputs
from models.text.tokenizer import normalize_text
from models.variants import FEATURES as VARIANT_FEATURES
from models.variants import HISTORY_FEATURES, ItemAttributes, VariantConfig, history_features

FEATURES: dict[str, str] = {
    # source ranks: log(1 + 0-based rank), NaN when the candidate is not in that source
    "id_rank": "rank in the ID model's list",
    "title_rank": "rank in the title-cosine list",
    "memory_rank": "rank among the memory's products for the last search",
    "search_rank": "best organic position in the user's recent searches",
    "history_rank": "recency rank among the user's own distinct items (0 = the last one)",
    "popularity_rank": "rank among the category's most interacted-with items in the 30 days before the target's day",
    "variant_source": "1 if added as a variant of a leading family",
    "n_sources": "number of sources (id, title, memory, search, history, popularity) that hold it",
    # searches
    "last_search_pos": "log(1 + organic position) in the user's latest search, NaN if not shown there",
    "search_age_h": "hours since the latest recent search that showed it",
    "last_search_age_h": "hours since the user's last search (per target)",
    "search_hits": "how many of the recent searches showed it",
    # model scores
    "id_cos": "cosine of the ID query vector and the item's ID embedding (missing: the ID model has no row for it)",
    "title_cos": "cosine of the title query vector and the item's title embedding",
    "title_cos_gap": "the best title cosine among the target's candidates minus this one",
    "recent_sim_max": "largest title-embedding cosine with the user's last 5 distinct items",
    "recent_sim_mean": "mean title-embedding cosine with the user's last 5 distinct items",
    "last_item_sim": "title-embedding cosine with the user's last item",
    # the family's best rank in each source
    "fam_id_rank": "best ID-list rank of any variant of its family",
    "fam_title_rank": "best title-list rank of any variant of its family",
    "fam_memory_rank": "best memory rank of any variant of its family",
    "fam_search_rank": "best organic position of any variant of its family in the recent searches",
    # query-title match
    "query_overlap": "share of the last query's tokens found in the title",
    "query_coverage": "share of the title's tokens found in the last query (1: the query names this very item)",
    "query_brand": "1 if the brand's tokens are all in the last query",
    "query_colour": "1 if the colour's tokens are all in the last query",
    "query_size": "1 if the size's tokens are all in the last query",
    # the variant re-ranker's 13 features, against the memory-first title list
    **{f"v_{n}": f"VariantRanker feature {n}" for n in VARIANT_FEATURES},
    # affinity with the history
    "hist_len": "clicked/purchased items in the history (per target)",
    "brand_hist": "log(1 + history items of the same brand)",
    "brand_share": "share of the history items of the same brand",
    "brand_recent": "items of the same brand among the user's last 5 distinct items",
    "subcategory_recent": "items of the same subcategory among the user's last 5 distinct items",
    "price_logratio": "log(price) minus the mean log(price) of the history",
    "price_logratio_sub": "log(price) minus the mean log(price) of the history items of its subcategory",
    "colour_share": "share of the history items in its colour",
    "size_share_sub": "share of the history items of its subcategory in its size",
    "season_hist": "log(1 + history items of the same season)",
    "occasion_hist": "log(1 + history items of the same occasion)",
    "gender_share": "share of the history items of the same gender",
    "material_hist": "log(1 + history items of the same material)",
    # what the category sells now (last 30 days, before the target's day)
    "season_trend": "share of the category's interactions with this season",
    "occasion_trend": "share of the category's interactions with this occasion",
    "colour_trend": "share of the category's interactions with this colour",
    # age
    "age_days": "days since the item's release",
    "family_age_days": "days since its family's first release",
    # popularity (before the target's day)
    "pop_7d": "log(1 + interactions in the last 7 days)",
    "pop_30d": "log(1 + interactions in the last 30 days)",
    "buy_30d": "log(1 + purchases in the last 30 days)",
    "pop_trend": "log((1 + last 7 days) / (1 + last 30 days / 30 * 7))",
    "pop_rank": "rank of its 30-day popularity among the target's candidates, as a share (0 = the most popular)",
    "fam_pop_7d": "log(1 + its family's interactions in the last 7 days)",
    "fam_pop_30d": "log(1 + its family's interactions in the last 30 days)",
    "fam_buy_30d": "log(1 + its family's purchases in the last 30 days)",
    # seen before
    "seen_count": "times the user clicked or bought it",
    "bought_before": "1 if the user bought it before",
    "seen_age_h": "hours since the user's last interaction with it",
    "family_seen_age_h": "hours since the user's last interaction with its family",
}
FEATURE_NAMES = tuple(FEATURES)
# The features in groups, for the ablations (`evaluation.ablation`): every feature is in exactly one group.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "source ranks": ("id_rank", "title_rank", "memory_rank", "search_rank", "history_rank", "popularity_rank",
                     "variant_source", "n_sources", "fam_id_rank", "fam_title_rank", "fam_memory_rank",
                     "fam_search_rank"),
    "searches": ("last_search_pos", "search_age_h", "last_search_age_h", "search_hits"),
    "model scores": ("id_cos", "title_cos", "title_cos_gap", "recent_sim_max", "recent_sim_mean", "last_item_sim"),
    "query match": ("query_overlap", "query_coverage", "query_brand", "query_colour", "query_size"),
    "variant features": tuple(f"v_{n}" for n in VARIANT_FEATURES),
    "affinities": ("hist_len", "brand_hist", "brand_share", "brand_recent", "subcategory_recent", "price_logratio",
                   "price_logratio_sub", "colour_share", "size_share_sub", "season_hist", "occasion_hist",
                   "gender_share", "material_hist"),
    "trends": ("season_trend", "occasion_trend", "colour_trend"),
    "ages": ("age_days", "family_age_days"),
    "popularity": ("pop_7d", "pop_30d", "buy_30d", "pop_trend", "pop_rank", "fam_pop_7d", "fam_pop_30d",
                   "fam_buy_30d"),
    "seen flags": ("seen_count", "bought_before", "seen_age_h", "family_seen_age_h"),
}


def features_without(*groups: str) -> tuple[str, ...]:
    """`FEATURE_NAMES` less the features of these `FEATURE_GROUPS`, in their order."""
    if unknown := [g for g in groups if g not in FEATURE_GROUPS]:
        raise ValueError(f"unknown feature groups {unknown}; choose from {list(FEATURE_GROUPS)}")
    drop = {f for g in groups for f in FEATURE_GROUPS[g]}
    return tuple(f for f in FEATURE_NAMES if f not in drop)
logger = logging.getLogger(__name__)
TOKENS_VERSION = "t1"  # bump when `title_tokens`' definition changes: older cache entries are then ignored
POPULAR_INDEX_K = 100  # items kept per (category, day) in the popularity source's index
POPULAR_VERSION = "p1"  # bump when `_popular_index`'s definition changes: older cache entries are then ignored
_RANK_SOURCES = ("id", "title", "memory", "search", "history", "popularity")
QUERY_MATCH = ("query_overlap", "query_coverage", "query_brand", "query_colour", "query_size")


def _code(values: pd.Series) -> np.ndarray:
    return pd.factorize(values.fillna("\0missing").astype(str), sort=True)[0].astype(np.int64)


PUNCT = ",.;:!?()[]{}\"'-|/&*+#"  # stripped from both ends of a token for matching; a token of only these is dropped


def match_tokens(text: str) -> frozenset[str]:
    """A query's or title's distinct match tokens: `normalize_text`, split on whitespace, punctuation stripped from
    both ends ("Blue," and "blue" match; a lone "-" is no token)."""
    return frozenset(t for t in (w.strip(PUNCT) for w in normalize_text(text).split()) if t)


@dataclass
class TitleTokens:
    """Every title's distinct match tokens as arrays (`match_tokens` of each): row r's title is distinct title
    `title_of_row[r]`, whose token ids are `title_ids[title_ptr[t]:title_ptr[t + 1]]`, ids into `vocab`."""

    title_of_row: np.ndarray  # (n,) int64
    title_ids: np.ndarray  # int64
    title_ptr: np.ndarray  # (distinct titles + 1,) int64
    vocab: list[str]  # the tokens, sorted


def title_tokens(titles: np.ndarray, cache: Path | None = None) -> TitleTokens:
    """`TitleTokens` of a catalog's titles, in row order. Computed once per set of titles and kept in
    `$FASHIONREC_CACHE/tokens` (keyed by a hash of the titles), which makes a second process's start (a service,
    each rolling refit's ranking stage) seconds faster on a large catalog."""
    titles = np.asarray(titles, dtype=object)
    digest = hashlib.sha1("\x00".join(titles.tolist()).encode("utf-8", "surrogatepass")).hexdigest()
    path = (Path(cache) if cache is not None else cache_root() / "tokens") / f"{digest}-{TOKENS_VERSION}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return TitleTokens(z["title_of_row"], z["title_ids"], z["title_ptr"], z["vocab"].tolist())
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is computed again
    uniq, inverse = np.unique(titles.astype(str), return_inverse=True)
    # `match_tokens` of every distinct title at once: NFKC, lowercase, split on whitespace (normalize_text's steps),
    # punctuation stripped from both ends, empty tokens dropped.
    words = pd.Series(uniq, dtype=object).str.normalize("NFKC").str.lower().str.split().explode().dropna()
    words = words.str.strip(PUNCT)
    words = words[words.str.len() > 0]
    pairs = pd.DataFrame({"title": words.index.to_numpy(np.int64), "token": words.to_numpy(object)}).drop_duplicates()
    codes, vocab_list = pd.factorize(pairs["token"], sort=True)
    out = TitleTokens(inverse.reshape(-1).astype(np.int64), codes.astype(np.int64),
                      np.concatenate([[0], np.cumsum(np.bincount(pairs["title"].to_numpy(), minlength=len(uniq)))
                                      ]).astype(np.int64), [str(t) for t in vocab_list])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, title_of_row=out.title_of_row, title_ids=out.title_ids, title_ptr=out.title_ptr,
                 vocab=np.asarray(out.vocab, dtype=str))
        tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
    except OSError as e:  # a read-only cache is no error: the arrays are computed each time
        logger.debug("could not cache title tokens at %s: %s", path, e)
    return out


@dataclass
class FeatureContext:
    """Catalog facts shared by every target: attribute codes, activity windows, and the embedding lookups."""

    attrs: ItemAttributes
    items: pd.DataFrame  # the catalog in `Catalog.items` order
    activity: ActivityTable
    id_vectors: Callable[[np.ndarray], np.ndarray]  # catalog rows -> (n, d_id) unit ID embeddings
    title_vectors: Callable[[np.ndarray], np.ndarray]  # catalog rows -> (n, d_title) unit title embeddings
    variant_cfg: VariantConfig = field(default_factory=VariantConfig)

    def __post_init__(self) -> None:
        it = self.items

        def col(name: str) -> pd.Series:  # an attribute the catalog lacks is missing for every item
            return it[name] if name in it else pd.Series([None] * len(it), index=it.index, dtype=object)

        self.brand, self.season, self.occasion = _code(col("brand")), _code(col("season")), _code(col("occasion"))
        self.gender, self.material = _code(col("gender")), _code(col("material"))
        price = it["price"].to_numpy(np.float64) if "price" in it else np.full(len(it), np.nan)
        self.log_price = np.log(np.where(price > 0, price, np.nan))  # (n,)
        ids = it["item_id"].astype(str)
        cat = it["category"].astype(str)
        self.item_key = ("item:" + ids).to_numpy(object)
        fam = it["family_id"].astype(str) if "family_id" in it else ids
        self.family_key = ("family:" + fam).to_numpy(object)
        self.cat_key = ("cat:" + cat).to_numpy(object)
        self.trend_key = {a: ("cat:" + cat + f"|{a}:" + it[a].fillna("").astype(str)).to_numpy(object)
                          for a in TREND_ATTRIBUTES if a in it}
        created = self.attrs.created_ns
        fam_first = pd.Series(created).groupby(self.attrs.family).transform("min").to_numpy(np.int64)
        self.family_created = fam_first  # (n,) the family's first release
        self.titles = it["title"].fillna("").astype(str).to_numpy()
        # Each item's rows in the activity table, looked up once here rather than per target.
        act = self.activity
        self.item_code, self.family_code = act.codes(self.item_key), act.codes(self.family_key)
        self.cat_code = act.codes(self.cat_key)
        self.trend_code = {a: act.codes(k) for a, k in self.trend_key.items()}
        # The query-match features' token sets, as arrays: every title's distinct token ids (CSR-like: the ids of
        # row r are title_ids[title_ptr[r]:title_ptr[r + 1]]), and per brand and colour value its token ids.
        tokens = title_tokens(self.titles)
        self.title_of_row, self.title_ids, self.title_ptr = tokens.title_of_row, tokens.title_ids, tokens.title_ptr
        vocab: dict[str, int] = {t: i for i, t in enumerate(tokens.vocab)}
        ids_of = lambda text: [vocab.setdefault(t, len(vocab)) for t in sorted(match_tokens(text))]  # noqa: E731
        self.brand_value, brand_values = pd.factorize(col("brand").fillna("").astype(str))
        self.brand_token_ids = [ids_of(b) for b in brand_values]
        self.colour_value, colour_values = pd.factorize(col("color").fillna("").astype(str))
        self.colour_token_ids = [ids_of(c) for c in colour_values]
        self.size_value, size_values = pd.factorize(col("size").fillna("").astype(str))
        self.size_token_ids = [ids_of(z) for z in size_values]
        self.vocab = vocab
        self._lazy: dict[str, Any] = {}  # built on first use; shared with `with_id_vectors`' copies

    def with_id_vectors(self, id_vectors: Callable[[np.ndarray], np.ndarray]) -> FeatureContext:
        """This context with another ID model's lookup: every catalog fact above, and what is built lazily, shared
        rather than copied. Each rolling refit's ranking stage differs only in its ID model; at medium-s0 x 4 a
        context per refit would hold eleven copies of the per-item keys, codes and title tokens."""
        other = copy.copy(self)  # a new instance dict over the same arrays (no __post_init__)
        other.id_vectors = id_vectors
        return other

    def popular(self, category: int, t_ns: int, k: int) -> np.ndarray:
        """The category's `k` most interacted-with items in the 30 days before t's day (ties: purchases, then item
        id), as catalog rows: the `popularity` candidate source. From the activity windows, so nothing at or after
        t's day counts."""
        if k <= 0:
            return np.zeros(0, np.int64)
        if "popular" not in self._lazy:
            self._lazy["popular"] = self._cached_popular_index(max(k, POPULAR_INDEX_K))
        top = self._lazy["popular"].get((int(category), int(t_ns) // (DAY_MS * 1_000_000)))
        return top[:k] if top is not None else np.zeros(0, np.int64)

    def _cached_popular_index(self, k: int, cache: Path | None = None) -> dict[tuple[int, int], np.ndarray]:
        """`_popular_index`, kept in `$FASHIONREC_CACHE/activity` when the activity table came from a file (keyed
        by that file, the catalog's item keys and category codes, and k): a service's start reads it instead of
        sorting the table's item rows (1.3 s on medium-s0); `fashionrec run`'s evaluation writes it first."""
        act = self.activity
        if act.source_key is None:
            return self._popular_index(k)
        h = hashlib.sha1(f"{act.source_key}|{k}|{POPULAR_VERSION}|".encode())
        h.update("\x00".join(self.item_key.tolist()).encode("utf-8", "surrogatepass"))
        h.update(np.ascontiguousarray(self.attrs.category, np.int64).tobytes())
        path = (Path(cache) if cache is not None else cache_root() / "activity") / f"popular-{h.hexdigest()}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys, ptr, rows = z["keys"], z["ptr"], z["rows"]
                return {(int(c), int(d)): rows[ptr[j]:ptr[j + 1]] for j, (c, d) in enumerate(keys.tolist())}
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is computed again
        index = self._popular_index(k)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            lists = list(index.values())
            np.savez(tmp, keys=np.asarray(list(index), np.int64).reshape(-1, 2),
                     ptr=np.concatenate([[0], np.cumsum([len(r) for r in lists], dtype=np.int64)]).astype(np.int64),
                     rows=np.concatenate([*lists, np.zeros(0, np.int64)]).astype(np.int64))
            tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
        except OSError as e:  # a read-only cache: computed each time
            logger.debug("could not cache the popularity index at %s: %s", path, e)
        return index

    def _popular_index(self, k: int) -> dict[tuple[int, int], np.ndarray]:
        """(category code, day) -> the top-k rows by (30-day interactions, 30-day purchases, row), from the activity
        table's item rows: an item with interactions in a day's window has a snapshot row on that day. Read from
        the table's sorted arrays (its keys factorized once), not from its frame's millions of key strings."""
        act = self.activity
        if len(act.comp) == 0:
            return {}
        uniq = act.keys  # distinct keys; a row's key is uniq[row_codes]
        is_item = np.asarray(uniq.str.startswith("item:"), bool) if len(uniq) else np.zeros(0, bool)
        row_of_key = np.full(len(uniq), -1, np.int64)
        row_of_key[is_item] = pd.Index(self.item_key).get_indexer(uniq[is_item])  # -1 unknown
        rows = row_of_key[act.row_codes]  # (r,)
        known = rows >= 0
        rows = rows[known]
        counts = act.values[known][:, [COUNTS.index("n_30d"), COUNTS.index("buy_30d")]].astype(np.int64)  # (m, 2)
        day = act.row_ms[known] // DAY_MS
        cat = self.attrs.category[rows]
        live = counts[:, 0] > 0  # the day a key's windows fall back to zero has a row too
        cat, day, rows, counts = cat[live], day[live], rows[live], counts[live]
        order = np.lexsort((rows, -counts[:, 1], -counts[:, 0], day, cat))
        cat, day, rows = cat[order], day[order], rows[order]
        start = np.flatnonzero(np.r_[True, (cat[1:] != cat[:-1]) | (day[1:] != day[:-1])]) if len(rows) else []
        ends = np.r_[start[1:], len(rows)] if len(rows) else []
        return {(int(cat[a]), int(day[a])): rows[a:min(b, a + k)] for a, b in zip(start, ends, strict=True)}

    def query_match(self, rows: np.ndarray, query: str) -> dict[str, np.ndarray]:
        """Per row: the share of the query's distinct tokens in its title (`query_overlap`), the share of its title's
        distinct tokens in the query (`query_coverage`), and whether its brand's, colour's and size's tokens (at
        least one) all occur in the query. (n,) float32 each, by feature name."""
        q = match_tokens(query)
        known = np.array(sorted(self.vocab[t] for t in q if t in self.vocab), np.int64)
        rows = np.asarray(rows, np.int64)
        title = self.title_of_row[rows]
        lo, hi = self.title_ptr[title], self.title_ptr[title + 1]
        lens = hi - lo
        pos = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
        hit = np.isin(self.title_ids[pos], known)  # each title token: in the query?
        matched = np.bincount(np.repeat(np.arange(len(rows)), lens)[hit], minlength=len(rows))
        overlap = matched / max(len(q), 1)
        coverage = matched / np.maximum(lens, 1)

        def subset(values: np.ndarray, tokens: list[list[int]]) -> np.ndarray:
            uniq, inv = np.unique(values[rows], return_inverse=True)
            ok = np.array([bool(tokens[v]) and set(tokens[v]) <= set(known.tolist()) for v in uniq.tolist()], bool)
            return ok[inv.reshape(-1)] if len(uniq) else np.zeros(len(rows), bool)

        return {"query_overlap": overlap.astype(np.float32), "query_coverage": coverage.astype(np.float32),
                "query_brand": subset(self.brand_value, self.brand_token_ids).astype(np.float32),
                "query_colour": subset(self.colour_value, self.colour_token_ids).astype(np.float32),
                "query_size": subset(self.size_value, self.size_token_ids).astype(np.float32)}


def _log_rank(rank: np.ndarray) -> np.ndarray:
    return np.where(rank >= 0, np.log1p(np.maximum(rank, 0)), np.nan).astype(np.float32)


def _family_best(inv: np.ndarray, n_families: int, rank: np.ndarray) -> np.ndarray:
    """Per candidate, the best (smallest >= 0) rank over the candidates of its family; -1 if none. `inv`: each
    candidate's family as an index into its `n_families` distinct families (`np.unique`'s inverse)."""
    big = np.iinfo(np.int64).max
    r = np.where(rank >= 0, rank, big)
    best = np.full(n_families, big, np.int64)
    np.minimum.at(best, inv, r)
    return np.where(best[inv] == big, -1, best[inv])


def _position_in(listed: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each of `rows`'s position in `listed` (distinct values), -1 if absent: `pd.Index(listed).get_indexer(rows)`
    by a sort and a binary search, several times faster on the few hundred values of one target. (n,) int64"""
    listed, rows = np.asarray(listed, np.int64), np.asarray(rows, np.int64)
    if not len(listed):
        return np.full(len(rows), -1, np.int64)
    order = np.argsort(listed, kind="stable")
    srt = listed[order]
    at = np.minimum(np.searchsorted(srt, rows), len(srt) - 1)
    return np.where(srt[at] == rows, order[at], -1)


def _hours(now_ns: int, then_ms: np.ndarray) -> np.ndarray:
    return ((now_ns // 1_000_000 - np.asarray(then_ms, np.float64)) / 3.6e6).astype(np.float32)


def compute(inp: TargetInputs, cand: Candidates, ctx: FeatureContext) -> np.ndarray:
    """The (n, len(FEATURES)) float32 feature matrix of one target's candidates, columns in `FEATURES` order."""
    rows, a, n = cand.rows, ctx.attrs, len(cand.rows)
    f: dict[str, np.ndarray] = {}
    in_source = np.zeros(n, np.int64)
    for s in _RANK_SOURCES:
        f[f"{s}_rank"] = _log_rank(cand.ranks[s])
        in_source += cand.ranks[s] >= 0
    f["variant_source"] = (cand.ranks["variant"] >= 0).astype(np.float32)
    f["n_sources"] = in_source.astype(np.float32)

    # Searches: position in the latest one, and the age of the latest one that showed the candidate.
    last_pos = np.full(n, np.nan, np.float32)
    shown_age = np.full(n, np.nan, np.float32)
    hits = np.zeros(n, np.float32)
    for j, (s, ms) in enumerate(zip(inp.searches, inp.search_ms, strict=True)):
        pos = _position_in(pd.unique(np.asarray(s, np.int64)), rows)  # (n,) position among the distinct results
        hits += pos >= 0
        hit = (pos >= 0) & np.isnan(shown_age)
        shown_age[hit] = _hours(inp.t_ns, np.full(hit.sum(), ms))
        if j == 0:
            last_pos[pos >= 0] = np.log1p(pos[pos >= 0])
    f["last_search_pos"], f["search_age_h"], f["search_hits"] = last_pos, shown_age, hits
    f["last_search_age_h"] = np.full(n, _hours(inp.t_ns, np.array([inp.search_ms[0]]))[0] if inp.search_ms else np.nan,
                                     np.float32)

    # Model scores.
    f["id_cos"] = (np.round(ctx.id_vectors(rows) @ inp.id_query, 5).astype(np.float32) if inp.id_query is not None
                   and n else np.full(n, np.nan, np.float32))
    titles = ctx.title_vectors(rows) if n else None  # (n, d), read once (the history affinity below reads it too)
    f["title_cos"] = (np.round(titles @ inp.title_query, 5).astype(np.float32)
                      if inp.title_query is not None and n else np.full(n, np.nan, np.float32))

    f["title_cos_gap"] = (np.nanmax(f["title_cos"]) - f["title_cos"] if n and np.isfinite(f["title_cos"]).any()
                          else np.full(n, np.nan, np.float32))
    fam = a.family[rows]
    ufam, inv = np.unique(fam, return_inverse=True)
    inv = inv.reshape(-1)
    for s in ("id", "title", "memory", "search"):
        f[f"fam_{s}_rank"] = _log_rank(_family_best(inv, len(ufam), cand.ranks[s]))

    # Query-title match.
    if inp.query is not None and match_tokens(inp.query):
        f |= ctx.query_match(rows, inp.query)
    else:
        for k in QUERY_MATCH:
            f[k] = np.full(n, np.nan, np.float32)

    # The variant features, against the memory-first title list (as the VariantRanker reads it).
    list_rows = pd.unique(np.concatenate([np.asarray(inp.memory_rows, np.int64), np.asarray(inp.title_rows, np.int64)]))
    fam_rank = _position_in(pd.unique(a.family[list_rows]), fam)  # (n,) -1 if the family is not listed
    pos = _position_in(list_rows, rows)
    # Each family's variants released by the target's time: all the families' rows at once (CSR ranges)
    start, lens = a.family_ptr[ufam], a.family_ptr[ufam + 1] - a.family_ptr[ufam]
    at = np.repeat(start - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
    released = a.created_ns[a.family_rows[at]] <= inp.t_ns
    n_var = np.bincount(np.repeat(np.arange(len(ufam)), lens), weights=released, minlength=len(ufam)
                        ).astype(np.float32)[inv]
    hist = np.asarray(inp.hist_rows, np.int64)
    hx = history_features(rows, hist, a, ctx.variant_cfg)  # (n, 9)
    f["v_family_rank"] = np.where(fam_rank >= 0, np.log1p(np.maximum(fam_rank, 0)), np.nan).astype(np.float32)
    f["v_listed"] = (pos >= 0).astype(np.float32)
    f["v_listed_rank"] = np.where(pos >= 0, np.log1p(np.maximum(pos, 0)), np.nan).astype(np.float32)
    f["v_family_variants"] = np.log(np.maximum(n_var, 1)).astype(np.float32)
    for j, name in enumerate(HISTORY_FEATURES):
        f[f"v_{name}"] = hx[:, j]

    # Affinity with the history.
    h = len(hist)
    f["hist_len"] = np.full(n, h, np.float32)

    def same(codes: np.ndarray) -> np.ndarray:
        return (codes[rows][:, None] == codes[hist][None, :]).sum(axis=1).astype(np.float32) if h else np.zeros(n)

    recent = np.asarray(list(dict.fromkeys(hist[::-1].tolist()))[:5], np.int64)  # latest first
    if len(recent) and n:
        sim = titles @ ctx.title_vectors(recent).T  # (n, R)
        f["recent_sim_max"] = np.round(sim.max(axis=1), 5).astype(np.float32)
        f["recent_sim_mean"] = np.round(sim.mean(axis=1), 5).astype(np.float32)
        f["last_item_sim"] = np.round(sim[:, 0], 5).astype(np.float32)
    else:
        f["recent_sim_max"] = f["recent_sim_mean"] = f["last_item_sim"] = np.full(n, np.nan, np.float32)
    f["brand_recent"] = (ctx.brand[rows][:, None] == ctx.brand[recent][None, :]).sum(axis=1).astype(np.float32)
    f["subcategory_recent"] = (a.subcategory[rows][:, None] == a.subcategory[recent][None, :]).sum(axis=1
                                                                                                  ).astype(np.float32)
    brand = same(ctx.brand)
    f["brand_hist"] = np.log1p(brand).astype(np.float32)
    f["brand_share"] = (brand / h if h else np.full(n, np.nan)).astype(np.float32)
    hist_price = ctx.log_price[hist] if h else np.zeros(0)
    mean_price = np.nanmean(hist_price) if np.isfinite(hist_price).any() else np.nan
    f["price_logratio"] = (ctx.log_price[rows] - mean_price).astype(np.float32)
    sub_match = a.subcategory[rows][:, None] == a.subcategory[hist][None, :] if h else np.zeros((n, 0), bool)  # (n, H)
    sub_n = sub_match.sum(axis=1)
    hp = np.where(np.isfinite(hist_price), hist_price, 0.0) if h else np.zeros(0)
    priced = sub_match & np.isfinite(hist_price)[None, :] if h else sub_match
    with np.errstate(invalid="ignore", divide="ignore"):
        sub_mean = (priced * hp[None, :]).sum(axis=1) / priced.sum(axis=1)
        f["price_logratio_sub"] = (ctx.log_price[rows] - sub_mean).astype(np.float32)
        f["colour_share"] = (same(a.colour) / h if h else np.full(n, np.nan)).astype(np.float32)
        size_sub = (sub_match & (a.size[rows][:, None] == a.size[hist][None, :])).sum(axis=1) if h else np.zeros(n)
        f["size_share_sub"] = np.where(sub_n > 0, size_sub / np.maximum(sub_n, 1), np.nan).astype(np.float32)
    f["season_hist"] = np.log1p(same(ctx.season)).astype(np.float32)
    f["occasion_hist"] = np.log1p(same(ctx.occasion)).astype(np.float32)
    f["gender_share"] = (same(ctx.gender) / h if h else np.full(n, np.nan)).astype(np.float32)
    f["material_hist"] = np.log1p(same(ctx.material)).astype(np.float32)

    # Activity windows as of the target's day: trends, popularity, family popularity.
    t = inp.t_ns
    act = ctx.activity
    cat_total = act.lookup_codes(ctx.cat_code[rows[:1]], t)[:, COUNTS.index("n_30d")] if n else np.zeros(1)
    denom = float(cat_total[0]) if n else 0.0
    for attr, name in (("season", "season_trend"), ("occasion", "occasion_trend"), ("color", "colour_trend")):
        if attr in ctx.trend_key and denom > 0:
            f[name] = act.lookup_codes(ctx.trend_code[attr][rows], t)[:, COUNTS.index("n_30d")] / denom
        else:
            f[name] = np.full(n, np.nan, np.float32)
    day_ns = 86_400 * 10**9
    f["age_days"] = ((t - a.created_ns[rows].astype(np.float64)) / day_ns).astype(np.float32)
    f["family_age_days"] = ((t - ctx.family_created[rows].astype(np.float64)) / day_ns).astype(np.float32)
    f["age_days"][a.created_ns[rows] == np.iinfo(np.int64).min] = np.nan
    f["family_age_days"][ctx.family_created[rows] == np.iinfo(np.int64).min] = np.nan
    item = act.lookup_codes(ctx.item_code[rows], t)  # (n, 4) n_7d n_30d buy_7d buy_30d
    fam_act = act.lookup_codes(ctx.family_code[rows], t)
    f["pop_7d"], f["pop_30d"], f["buy_30d"] = np.log1p(item[:, 0]), np.log1p(item[:, 1]), np.log1p(item[:, 3])
    f["pop_trend"] = (np.log1p(item[:, 0]) - np.log1p(item[:, 1] * 7 / 30)).astype(np.float32)
    neg = -item[:, 1]  # the "min" rank: 1 + how many candidates are more popular
    f["pop_rank"] = (np.searchsorted(np.sort(neg), neg, side="left") / max(n, 1)).astype(np.float32)
    f["fam_pop_7d"], f["fam_pop_30d"] = np.log1p(fam_act[:, 0]), np.log1p(fam_act[:, 1])
    f["fam_buy_30d"] = np.log1p(fam_act[:, 3])

    # Seen before.
    if h:
        match = rows[:, None] == hist[None, :]  # (n, H)
        f["seen_count"] = match.sum(axis=1).astype(np.float32)
        f["bought_before"] = (match & np.asarray(inp.hist_buy, bool)[None, :]).any(axis=1).astype(np.float32)
        hist_ms = np.asarray(inp.hist_ms, np.float64)
        last = np.where(match, hist_ms[None, :], -np.inf).max(axis=1)
        f["seen_age_h"] = np.where(np.isfinite(last), _hours(t, np.where(np.isfinite(last), last, 0)), np.nan)
        fmatch = fam[:, None] == a.family[hist][None, :]
        flast = np.where(fmatch, hist_ms[None, :], -np.inf).max(axis=1)
        f["family_seen_age_h"] = np.where(np.isfinite(flast), _hours(t, np.where(np.isfinite(flast), flast, 0)), np.nan)
    else:
        f["seen_count"], f["bought_before"] = np.zeros(n, np.float32), np.zeros(n, np.float32)
        f["seen_age_h"], f["family_seen_age_h"] = np.full(n, np.nan), np.full(n, np.nan)

    missing = set(FEATURE_NAMES) - set(f)
    if missing:
        raise AssertionError(f"features declared but not computed: {sorted(missing)}")
    return np.stack([np.asarray(f[k], np.float32).reshape(n) for k in FEATURE_NAMES], axis=1) if n else \
        np.zeros((0, len(FEATURE_NAMES)), np.float32)
