"""The LLM stage over retrieval (Liu et al. sections 4.2-4.5, and LlamaRec-style candidate scoring).

- `PromptFactory`: the prompt inputs of a batch of targets (or requests): the actions before each target, and for
  every search among them the query-product memory's top products, read as of the target's time (`AsOfMemory`),
  so a prompt never holds anything from after its target.
- `LLMGenerateScorer` (the paper's full framework, "llm-generate-mixup"): the model generates an ID and a title; a
  generated ID that is a catalog item with a trained ID embedding selects that embedding as the ID query (else the
  sequence representation); the generated title is embedded by the title model as the title query (else the usual
  title query); mixup over the two lists gives the top K. Every listed item comes from the target category's
  catalog rows, so every recommendation is a real item of that category.
- `LLMCandidateScorer` ("llm-candidates"): the first 20 items of a retrieval list are shown as lettered candidates
  with their attributes; one forward pass gives a distribution over the letters, averaged over `permutations`
  shuffles of the candidates (position bias); the candidates are re-ranked by it and the rest of the list follows.
- `RankerLLMScorer` ("ranker-llm"): the learned ranker's top 20 as lettered candidates, and a second LambdaMART
  pass over the LLM's letter scores and the first pass's own (`models.ranker.llm_pass`).
All are tie-aware like the scorers they wrap (the target goes after its ties), and record what they saw
(`records`): the raw answers, parse results and candidate recall, for the benchmark's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluation.common import category_batches, rows_to_scores
from evaluation.ranking import RankerScorer
from evaluation.retrieval import RetrievalScorer, TitleQueries, VariantScorer
from models.catalog import Catalog
from models.common import l2_normalize
from models.llm.engine import Engine, as_engine
from models.llm.generate import GenerateConfig, IdTrie
from models.llm.model import LoadedLLM
from models.llm.prompt import (
    LETTERS,
    LIMITS,
    CatalogItems,
    Prompt,
    PromptConfig,
    PromptInput,
    build_prompt,
    candidate_block,
    display_order,
    parse_answer,
)
from models.llm.prompt import Action as PromptAction
from models.ranker.llm_pass import second_pass
from models.ranker.model import LearnedRanker
from models.text.encoder import TextEncoder
from models.text.memory import AsOfMemory
from models.text.tokenizer import normalize_text


@dataclass
class PromptFactory:
    """Prompt inputs for targets: their actions and the as-of memory's products for each of their searches."""

    memory: AsOfMemory | None
    memory_products: int = 3

    def inputs(self, batch: pd.DataFrame) -> list[PromptInput]:
        actions = [[PromptAction(a, i or None, q or None) for a, i, q in zip(acts, ids, qs, strict=True)]
                   for acts, ids, qs in zip(batch["seq_actions"], batch["seq_item_ids"], batch["seq_queries"],
                                            strict=True)]
        memories: list[dict[str, tuple[str, ...]]] = [{} for _ in range(len(batch))]
        if self.memory is not None and len(self.memory):
            pairs = [(b, a.query) for b, acts in enumerate(actions) for a in acts
                     if a.action == "search" and a.query and normalize_text(a.query)]
            pairs = list(dict.fromkeys(pairs))
            if pairs:
                times = batch["target_ts"].to_numpy()
                hits = self.memory.lookup_queries([q for _, q in pairs], times[[b for b, _ in pairs]], q=1,
                                                  v=self.memory_products)
                for (b, q), h in zip(pairs, hits, strict=True):
                    if h:
                        memories[b][q] = h[0].products
        cats = batch["category"].tolist() if "category" in batch else [None] * len(batch)
        return [PromptInput(tuple(a), m, c) for a, m, c in zip(actions, memories, cats, strict=True)]


@dataclass
class LLMRecord:
    """What the LLM said for one target."""

    user_id: str
    target_item_id: str
    answer: str = ""
    item_id: str | None = None
    title: str | None = None
    well_formed: bool = False
    valid_item: bool = False  # the parsed ID is an item of the target's category
    candidates: list[str] = field(default_factory=list)
    letter_probs: list[float] = field(default_factory=list)


class LLMGenerateScorer(RetrievalScorer):
    """The paper's framework: generated ID and title -> ID and title queries -> the `cfg.mode` combination."""

    def __init__(self, base: RetrievalScorer, llm: LoadedLLM | Engine, factory: PromptFactory, items: CatalogItems,
                 encoder: TextEncoder, id_vector_of: Callable[[list[str | None]], np.ndarray | None],
                 prompt_cfg: PromptConfig = PromptConfig(), gen_cfg: GenerateConfig = GenerateConfig(),
                 constrained: bool = False) -> None:
        super().__init__(base.catalog, base.id_vectors, base.title_vectors, base.id_queries, base.title_queries,
                         base.cfg, id_known=base.id_known)  # the same ID list: only items with a row of their own
        self.engine, self.factory, self.items, self.encoder = as_engine(llm), factory, items, encoder
        self.id_vector_of = id_vector_of  # generated ids -> (B, d_id) rows, NaN where no trained embedding
        self.prompt_cfg, self.gen_cfg, self.constrained = prompt_cfg, gen_cfg, constrained
        self.records: list[LLMRecord] = []
        self._tries: dict[str, IdTrie] = {}

    def _trie(self, category: str, cat_rows: np.ndarray) -> IdTrie:
        if category not in self._tries:
            self._tries[category] = IdTrie(self.engine.tokenizer, self.catalog.item_ids[cat_rows])
        return self._tries[category]

    def answers(self, batch: pd.DataFrame, cat_rows: np.ndarray) -> list[LLMRecord]:
        """Generate and parse one answer per target."""
        inputs = self.factory.inputs(batch)
        texts = [build_prompt(i, self.items, self.engine.tokenizer, self.prompt_cfg).text for i in inputs]
        tries = None
        if self.constrained:
            trie = self._trie(str(batch["category"].iloc[0]), cat_rows)
            tries = [trie] * len(texts)
        out = self.engine.generate(texts, self.gen_cfg, tries)
        allowed = set(self.catalog.item_ids[cat_rows].tolist())
        recs = []
        for (_, row), text in zip(batch.iterrows(), out, strict=True):
            p = parse_answer(text)
            recs.append(LLMRecord(str(row["user_id"]), str(row.get("target_item_id", "")), text, p.item_id, p.title,
                                  p.well_formed, p.item_id in allowed))
        return recs

    def queries(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | TitleQueries]:
        qi, found = super().queries(batch, cat_rows, demote)
        recs = self.answers(batch, cat_rows)
        self.records += recs
        gen_ids = self.id_vector_of([r.item_id if r.valid_item else None for r in recs])  # (B, d_id) or None
        if gen_ids is not None:
            use = ~np.isnan(gen_ids).any(axis=1)
            qi = np.where(use[:, None], gen_ids, qi)
        titled = [b for b, r in enumerate(recs) if r.title]
        if titled:
            vec = l2_normalize(self.encoder.encode([normalize_text(recs[b].title) for b in titled]))  # (n, d_t)
            if isinstance(found, TitleQueries):
                vectors = found.vectors.copy()
                vectors[titled] = vec
                found = TitleQueries(vectors, found.memory_rows)
            else:
                found = np.asarray(found, np.float32).copy()
                found[titled] = vec
        return qi, found


class LLMCandidateScorer:
    """Re-rank the first `n` items of a retrieval list by the LLM's letter distribution (see the module doc)."""

    tie_aware = True

    def __init__(self, base: RetrievalScorer | VariantScorer | None, llm: LoadedLLM | Engine, factory: PromptFactory,
                 items: CatalogItems, catalog: Catalog, prompt_cfg: PromptConfig = PromptConfig(), n: int = LIMITS.candidates,
                 permutations: int = 1, seed: int = 0, batch_size: int = 8) -> None:
        self.base, self.engine, self.factory, self.items, self.catalog = base, as_engine(llm), factory, items, catalog
        self.prompt_cfg, self.n, self.permutations, self.seed, self.batch_size = prompt_cfg, n, permutations, seed, \
            batch_size
        self.records: list[LLMRecord] = []
        self.top_letters: list[tuple[int, int]] = []  # (the model's top letter, letters shown) per prompt

    def base_rows(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None
                  ) -> tuple[list[np.ndarray], np.ndarray]:
        """Each target's base list as catalog rows, and the base's title cosine (B, n_cat)."""
        if isinstance(self.base, VariantScorer):
            return self.base.ranked_rows(batch, cat_rows, demote)
        id_top, title_top, title_cos = self.base.lists(batch, cat_rows, demote)
        cols = self.base.combined(id_top, title_top, demote)
        return [cat_rows[np.asarray(c, np.int64)] for c in cols], title_cos

    def permutation(self, user: str, n: int, p: int) -> np.ndarray:
        """The p-th display order of n candidates for a user (see `display_order`)."""
        return display_order(user, n, p, self.seed)

    def prompts(self, batch: pd.DataFrame, cands: list[np.ndarray]) -> tuple[list[str], list[np.ndarray], list[int]]:
        """The candidate prompts of a batch: (texts, each one's display order, the batch row it belongs to); one
        per display permutation of each target with more than one candidate."""
        inputs = self.factory.inputs(batch)
        texts, perms, owners = [], [], []
        for b, (inp, rows) in enumerate(zip(inputs, cands, strict=True)):
            ids = self.catalog.item_ids[rows].tolist()
            for p in range(self.permutations if len(ids) > 1 else 0):
                order = self.permutation(str(batch["user_id"].iloc[b]), len(ids), p)
                block = candidate_block([ids[i] for i in order], self.items, self.prompt_cfg)
                texts.append(build_prompt(inp, self.items, self.engine.tokenizer, self.prompt_cfg,
                                          candidates=block).text)
                perms.append(order)
                owners.append(b)
        return texts, perms, owners

    def candidate_scores(self, batch: pd.DataFrame, cands: list[np.ndarray]) -> list[np.ndarray]:
        """Mean letter log-probability of each candidate over the display permutations. B arrays (n_b,)."""
        texts, perms, owners = self.prompts(batch, cands)
        scores = [np.zeros(len(c)) for c in cands]
        if texts:
            lp = self.engine.letter_scores(texts, [len(o) for o in perms], self.batch_size)
            for b, order, x in zip(owners, perms, lp, strict=True):
                scores[b][order] += x / self.permutations  # letter j showed candidate order[j]
                self.top_letters.append((int(np.argmax(x)), len(x)))
        return scores

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        lists, title_cos = self.base_rows(batch, cat_rows, demote)
        cands = [rows[: self.n] for rows in lists]
        scores = self.candidate_scores(batch, cands)
        out = []
        for b, (rows, c, s) in enumerate(zip(lists, cands, scores, strict=True)):
            last = None if demote is None else int(cat_rows[demote[b]])
            tiebreak = np.where(c == last, len(c), np.arange(len(c)))  # ties: list order, the target last
            ranked = c[np.lexsort((tiebreak, -np.round(s, 9)))]
            out.append(np.concatenate([ranked, rows[self.n:]]))
            t = batch.iloc[b]
            self.records.append(LLMRecord(str(t["user_id"]), str(t.get("target_item_id", "")),
                                          candidates=self.catalog.item_ids[c].tolist(),
                                          letter_probs=np.exp(s).round(4).tolist()))
        return rows_to_scores(out, cat_rows, title_cos)


class RankerLLMScorer:
    """`ranker-llm`: the learned ranker's top `n`, scored by the LLM and re-ordered by the second pass
    (`models.ranker.llm_pass`); the rest of the ranker's order follows."""

    tie_aware = True

    def __init__(self, first: RankerScorer, llm: LLMCandidateScorer, second: LearnedRanker, n: int = LIMITS.candidates
                 ) -> None:
        self.first, self.llm, self.second, self.n = first, llm, second, n
        self.records: list[LLMRecord] = []

    @property
    def top_letters(self) -> list[tuple[int, int]]:
        return self.llm.top_letters

    def __call__(self, batch: pd.DataFrame, cat_rows: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
        ranked, title_cos = self.first.ranked_rows(batch, cat_rows, demote)
        lp = self.llm.candidate_scores(batch, [r.rows[: self.n] for r in ranked])
        out = []
        for b, r in enumerate(ranked):
            last = None if demote is None else int(cat_rows[demote[b]])
            top, _ = second_pass(r.rows[: self.n], r.scores[: self.n], lp[b], self.second, last)
            out.append(np.concatenate([top, r.rows[self.n:]]))
            t = batch.iloc[b]
            self.records.append(LLMRecord(str(t["user_id"]), str(t.get("target_item_id", "")),
                                          candidates=self.catalog.item_ids[r.rows[: self.n]].tolist(),
                                          letter_probs=np.exp(lp[b]).round(4).tolist()))
        return rows_to_scores(out, cat_rows, title_cos)

    @property
    def catalog(self) -> Catalog:
        return self.first.base.catalog


def moment_keys(df: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    """Each row's target moment: (user, time)."""
    return list(zip(df["user_id"].astype(str), pd.to_datetime(df["target_ts"]), strict=True))


def fit_second_pass(scorer: LLMCandidateScorer, targets: pd.DataFrame, lists: pd.DataFrame, seed: int,
                    batch_size: int = 16) -> tuple[LearnedRanker, list[np.ndarray]]:
    """`ranker-llm`'s second pass on the ranker's top lists of these targets (`lists`: rows of
    `evaluation.ranking.top_lists`, `position` into `targets`), scored by the LLM; and the letter scores."""
    from models.ranker.llm_pass import fit_pass, pass_config

    batch = targets.iloc[lists["position"].to_numpy()].reset_index(drop=True)
    cands = [scorer.catalog.index_of(list(i)) for i in lists["items"]]
    lp: list[np.ndarray] = []
    for s in range(0, len(batch), batch_size):
        lp += scorer.candidate_scores(batch.iloc[s:s + batch_size].reset_index(drop=True), cands[s:s + batch_size])
    groups = [(np.asarray(f, np.float64), x, (np.asarray(i) == t).astype(np.float32))
              for f, x, i, t in zip(lists["scores"], lp, lists["items"], lists["target_item_id"], strict=True)]
    return fit_pass(groups, pass_config(seed)), lp


def generation_summary(records: Sequence[LLMRecord], catalog: Catalog) -> dict:
    """Format violations, valid catalog IDs, and exact-item and family hit rates of the generated answers."""
    if not records:
        return {"n": 0}
    fam = catalog.items.set_index("item_id")["family_id"] if "family_id" in catalog.items else None
    exact = [r.item_id == r.target_item_id for r in records]
    family = [fam is not None and r.item_id in fam.index and fam.get(r.item_id) == fam.get(r.target_item_id)
              for r in records]
    return {"n": len(records), "format_violation_rate": float(np.mean([not r.well_formed for r in records])),
            "valid_catalog_id_rate": float(np.mean([r.valid_item for r in records])),
            "exact_item_hit_rate": float(np.mean(exact)), "family_hit_rate": float(np.mean(family))}


def candidate_summary(scorers: Sequence[LLMCandidateScorer]) -> dict:
    """Over what these scorers saw (one per rolling refit, or one): candidate-list recall (the target among the
    candidates), how often the model's choice is the retrieval list's first item, and its position bias: how often
    its top letter is A, against 1/n for no bias."""
    records = [r for s in scorers for r in s.records]
    if not records:
        return {"n": 0}
    recall = float(np.mean([r.target_item_id in r.candidates for r in records]))
    top = [int(np.argmax(r.letter_probs)) for r in records if r.letter_probs]
    hit = [r.candidates[int(np.argmax(r.letter_probs))] == r.target_item_id for r in records if r.letter_probs]
    letters = [x for s in scorers for x in s.top_letters]
    return {"n": len(records), "candidate_recall": recall,
            "choice_is_list_first": float(np.mean([p == 0 for p in top])) if top else float("nan"),
            "choice_is_target": float(np.mean(hit)) if hit else float("nan"),
            "top_letter_A": float(np.mean([a == 0 for a, _ in letters])) if letters else float("nan"),
            "top_letter_A_unbiased": float(np.mean([1 / n for _, n in letters])) if letters else float("nan")}


def training_prompts(targets: pd.DataFrame, ranked: VariantScorer | RetrievalScorer | Sequence[Sequence[str]],
                     factory: PromptFactory, items: CatalogItems, catalog: Catalog, tokenizer: Any, cfg: PromptConfig,
                     candidates: int = LIMITS.candidates, seed: int = 0) -> pd.DataFrame:
    """Training prompts for these (validation) targets: a generation prompt each (response: ID and title) and,
    where the bought item is among the first `candidates` of its list, a candidate prompt with them shuffled
    (response: its letter; shuffled so that the list order cannot teach "A is usually right"). `ranked` gives the
    lists: a scorer, or each target's list of item ids (aligned with `targets`; the learned ranker's out-of-fold top
    20, the candidates `ranker-llm` shows)."""
    rows: list[tuple[str, str, Prompt, int, pd.Timestamp]] = []  # (user, kind, prompt, candidates shown, target time)
    for _, idx, batch, cat_rows in category_batches(targets, catalog, batch_size=max(len(targets), 1), max_cells=None):
        batch = batch.reset_index(drop=True)  # one batch per category
        if isinstance(ranked, VariantScorer):
            lists, _ = ranked.ranked_rows(batch, cat_rows)
        elif isinstance(ranked, RetrievalScorer):
            lists = [cat_rows[np.asarray(c, np.int64)] for c in ranked.ranked(batch, cat_rows)]
        else:
            lists = [catalog.index_of(list(ranked[i])) for i in idx]
        for b, (inp, lst) in enumerate(zip(factory.inputs(batch), lists, strict=True)):
            user, target = str(batch["user_id"].iloc[b]), str(batch["target_item_id"].iloc[b])
            ts = batch["target_ts"].iloc[b]
            rows.append((user, "generate", build_prompt(inp, items, tokenizer, cfg,
                                                        response=(target, items.title(target))), 0, ts))
            cands = catalog.item_ids[lst[:candidates]].tolist()
            if target in cands:
                order = np.random.default_rng([seed, b, len(rows)]).permutation(len(cands))
                shown = [cands[i] for i in order]
                rows.append((user, "candidates", build_prompt(inp, items, tokenizer, cfg,
                                                              response=LETTERS[shown.index(target)],
                                                              candidates=candidate_block(shown, items, cfg)),
                             len(shown), ts))
    return pd.DataFrame({"user_id": [r[0] for r in rows], "target_ts": [r[4] for r in rows],
                         "kind": [r[1] for r in rows],
                         "text": [r[2].text for r in rows], "response": [r[2].response for r in rows],
                         "n_candidates": [r[3] for r in rows], "n_tokens": [r[2].n_tokens for r in rows],
                         "n_dropped": [r[2].n_dropped for r in rows]})
