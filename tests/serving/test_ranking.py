"""The learned ranking stage: serving (Qdrant searches, one request) ranks exactly like the evaluation scorer
(exact numpy, a batch), and the evaluation's tie rule puts the target last among the candidates it ties with."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import evaluate
from evaluation.ranking import RankerScorer, ranker_examples
from models.common import l2_normalize
from models.ranker.candidates import SOURCES, CandidateConfig
from models.ranker.features import FEATURE_NAMES
from models.ranker.model import LearnedRanker, RankerConfig, fit_ranker
from models.retrieval import RetrievalConfig
from models.text import HashingNgramEncoder
from serving.recommend import OnlineRetriever, UserContext
from tests.helpers import T0, catalog_items, make_scorer, search_results

MS = 1_000_000
CFG = CandidateConfig(id_k=6, title_k=6, searches=2, history=5, popular=4, variant_id_k=2, variant_title_k=2,
                      variant_search_k=2, max_family_variants=9)


def with_attributes(items: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return items.assign(brand=[f"brand{i % 3}" for i in range(len(items))],
                        price=rng.uniform(10, 90, len(items)).round(2),
                        season=rng.choice(["summer", "winter"], len(items)),
                        occasion=rng.choice(["casual", "work"], len(items)),
                        gender="women", material="cotton")


def events(items: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    ids = rng.choice(items["item_id"].to_numpy(), 200)
    return pd.DataFrame({"user_id": [f"x{i % 20}" for i in range(200)], "session_id": 0,
                         "timestamp": [T0 - pd.Timedelta(hours=float(h)) for h in rng.uniform(1, 900, 200)],
                         "action": rng.choice(["click", "purchase"], 200, p=[0.8, 0.2]), "item_id": ids,
                         "query": None, "search_id": None})


def ms(ts: pd.Timestamp) -> int:
    return int(ts.value // MS)


# (category, history [(item, action, hours before T0)], searches [(search id, hours before T0)], last query)
CONTEXTS = [
    ("Footwear", [("F0-red-8", "click", 30), ("F1-black-8", "purchase", 20)], [(3, 25), (6, 10)], "red snekers"),
    ("Footwear", [("F2-blue-9", "click", 5)], [], None),
    ("Clothing", [], [(2, 2)], "blue dress"),
    ("Clothing", [("C3-red-7", "purchase", 50), ("C0-blue-7", "click", 40), ("F0-red-8", "click", 3)],
     [(5, 45), (11, 4)], "warm coat"),
    ("Clothing", [("C1-red-7", "click", 9), ("C1-red-7", "purchase", 8)], [(8, 12)], "denim jeans"),
]


def as_targets(targets: list[str] | None = None, at: pd.Timestamp = T0) -> pd.DataFrame:
    rows = []
    for i, (cat, hist, searches, query) in enumerate(CONTEXTS):
        seq = sorted([(at - pd.Timedelta(hours=h), "click" if a == "click" else "purchase", it, "", -1)
                      for it, a, h in hist]
                     + [(at - pd.Timedelta(hours=h), "search", "", query or "", sid) for sid, h in searches])
        rows.append({"user_id": f"u{i}", "category": cat, "target_ts": at, "cold_start": False,
                     "target_item_id": (targets or ["F0-red-7" if cat == "Footwear" else "C0-red-7"] * 9)[i],
                     "seq_actions": [s[1] for s in seq], "seq_item_ids": [s[2] for s in seq],
                     "seq_queries": [s[3] for s in seq], "seq_search_ids": [s[4] for s in seq],
                     "seq_timestamps": [ms(s[0]) for s in seq]})
    return pd.DataFrame(rows)


def context(i: int, at: pd.Timestamp = T0) -> UserContext:
    cat, hist, searches, query = CONTEXTS[i]
    hist = sorted(hist, key=lambda h: -h[2])
    return UserContext(cat, [h[0] for h in hist], query, at, history_buy=[h[1] == "purchase" for h in hist],
                       history_ms=[ms(at - pd.Timedelta(hours=h[2])) for h in hist],
                       searches=[(sid, ms(at - pd.Timedelta(hours=h))) for sid, h in searches])


@pytest.fixture(scope="module")
def setup():  # noqa: ANN201
    items = with_attributes(catalog_items())
    encoder = HashingNgramEncoder()
    catalog, scorer, store, id_queries, memory = make_scorer(items, events(items), search_results(items), encoder, CFG)
    # A real LambdaMART fitted on these targets (bought items drawn from their candidates).
    rng = np.random.default_rng(5)
    groups = []
    for rep in range(12):
        at = T0 - pd.Timedelta(days=rep)
        ex = ranker_examples(scorer, as_targets(at=at))
        for x, _ in ex.groups:
            y = np.zeros(len(x), np.float32)
            y[rng.integers(len(x))] = 1.0
            groups.append((x, y))
    model = fit_ranker(groups, FEATURE_NAMES, RankerConfig(min_data_in_leaf=5, bags=2, max_rounds=30, min_rounds=5))
    assert model.boosters, model.info
    scorer.ranker = model
    return catalog, encoder, store, scorer, id_queries, memory


@pytest.mark.parametrize("scan", [False, True], ids=["collections", "table-scan"])
def test_online_ranking_stage_equals_the_evaluation_scorer(setup, scan: bool) -> None:  # noqa: ANN001
    """Serving ranks like the evaluation, whether its ID and title lists come from their collections or from scans
    of the tables (the evaluation's own vectors)."""
    catalog, encoder, store, scorer, id_queries, memory = setup
    base = scorer.base
    id_table = np.where(base.id_known[:, None], l2_normalize(base.id_vectors), np.nan).astype(np.float32)
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=RetrievalConfig(k=10), memory=memory,
                             ranking=scorer.stage, title_vectors=base.title_vectors, id_vectors=id_table, scan=scan)
    assert online.scan is scan
    batch = as_targets()
    for i in range(len(CONTEXTS)):
        rows = catalog.rows[CONTEXTS[i][0]]
        ranked, _ = scorer.ranked_rows(batch.iloc[[i]], rows)
        expect = catalog.item_ids[ranked[0].rows[:10]].tolist()
        got = online.recommend(context(i))
        assert got.items == expect, f"context {i}"
        assert len(set(ranked[0].scores[:10])) > 1, "a fitted ranker separates the candidates"
        assert set(got.sources.values()) <= {*SOURCES}
    # Seen items stay candidates (a flag, not a filter): context 4 bought C1-red-7, and it is among the candidates.
    ranked, _ = scorer.ranked_rows(batch.iloc[[4]], catalog.rows["Clothing"])
    assert catalog.index_of(["C1-red-7"])[0] in ranked[0].candidates.rows


def test_ranking_many_targets_in_one_call_is_ranking_each_alone(setup) -> None:  # noqa: ANN001
    """The evaluation scores a batch's candidates in one LightGBM call on two threads: the same floats, rows and
    features as each target ranked alone on one thread (as serving does)."""
    catalog, _, _, scorer, _, _ = setup
    batch = as_targets()
    cats = batch["category"].tolist()
    cat = max(set(cats), key=cats.count)
    sub = batch[batch["category"] == cat]
    assert len(sub) >= 2
    inputs, _ = scorer.inputs(sub, catalog.rows[cat])
    demote = [None, *[int(r) for r in catalog.rows[cat][: len(inputs) - 1]]]
    together = scorer.stage.rank_many(inputs, demote, threads=2)
    for inp, last, got in zip(inputs, demote, together, strict=True):
        alone = scorer.stage.rank(inp, last)
        assert np.array_equal(got.rows, alone.rows) and np.array_equal(got.scores, alone.scores)
        assert np.array_equal(got.features, alone.features, equal_nan=True)
    assert len(set(together[0].scores)) > 1  # a fitted ranker separates the candidates


def test_each_source_contributes_candidates(setup) -> None:  # noqa: ANN001
    catalog, _, _, scorer, _, _ = setup
    batch = as_targets()
    inputs, _ = scorer.inputs(batch.iloc[[0]], catalog.rows["Footwear"])
    ranked = scorer.stage.rank(inputs[0])
    ranks = ranked.candidates.ranks
    for s in SOURCES:
        assert (ranks[s] >= 0).any(), f"source {s} added no candidate"
    inp = inputs[0]
    rows = set(ranked.candidates.rows.tolist())
    assert set(inp.id_rows[: CFG.id_k].tolist()) <= rows and set(inp.title_rows[: CFG.title_k].tolist()) <= rows
    assert set(inp.memory_rows.tolist()) <= rows and set(inp.hist_rows.tolist()) <= rows
    assert set(inp.popular_rows[: CFG.popular].tolist()) <= rows and len(inp.popular_rows) >= CFG.popular
    assert {r for s in inp.searches for r in s.tolist() if catalog.items["category"].iat[r] == "Footwear"} <= rows
    # Every released variant of the families of the first ID and title items is a candidate.
    attrs = scorer.ctx.attrs
    for lead in (inp.id_rows[0], inp.title_rows[0]):
        assert set(attrs.variants(attrs.family[lead]).tolist()) <= rows
    assert (attrs.category[ranked.candidates.rows] == attrs.category[catalog.rows["Footwear"][0]]).all()
    # A family over the cap adds only its variants in a size the user had in that subcategory, or in a colour
    # that a source listed: F0 (sneaker) was clicked in size 8, so its size-7 and size-9 variants of colours
    # nobody listed stay out.
    from models.ranker.candidates import generate

    small = generate(inp, attrs, replace(CFG, max_family_variants=3))
    listed = set(np.concatenate([inp.id_rows[: CFG.id_k], inp.title_rows[: CFG.title_k], inp.memory_rows,
                                 *inp.searches, inp.hist_rows, inp.popular_rows[: CFG.popular]]).tolist())
    f0 = [r for r in small.rows.tolist() if catalog.item_ids[r].startswith("F0-")]
    listed_colours = {attrs.colour[r] for r in listed if catalog.item_ids[r].startswith("F0-")}
    assert f0 and all(catalog.item_ids[r].endswith("-8") or attrs.colour[r] in listed_colours or r in listed
                      for r in f0)
    assert len(small.rows) < len(ranked.candidates.rows)


def test_constant_ranker_gets_the_worst_tie_broken_rank(setup) -> None:  # noqa: ANN001
    """Every candidate scores the same: the target goes after every candidate it ties with, so its rank equals the
    number of candidates (and it is never first)."""
    catalog, _, _, scorer, _, _ = setup
    constant = RankerScorer(scorer.base, replace(scorer.stage, ranker=LearnedRanker([], FEATURE_NAMES)))
    batch = as_targets()
    targets, n_cand = [], []
    for i, (cat, *_rest) in enumerate(CONTEXTS):
        inputs, _ = constant.inputs(batch.iloc[[i]], catalog.rows[cat])
        ranked = constant.stage.rank(inputs[0])
        assert (ranked.scores == ranked.scores[0]).all()
        targets.append(catalog.item_ids[ranked.rows[0]])  # first in item id order: a tie-blind rank would be 1
        n_cand.append(len(ranked.rows))
    res = evaluate("constant", constant, batch.assign(target_item_id=targets), catalog, progress=False)
    got = res.rankings.set_index("user_id")["target_rank"]
    assert [int(got[f"u{i}"]) for i in range(len(CONTEXTS))] == n_cand
    assert min(n_cand) > 1


def features_by_item(items: pd.DataFrame, ev: pd.DataFrame, sr: pd.DataFrame, target: int) -> pd.DataFrame:
    """The ranking stage's features of one target's candidates, indexed by item id."""
    catalog, scorer, *_ = make_scorer(items, ev, sr, HashingNgramEncoder(), replace(CFG, max_family_variants=20))
    cat = CONTEXTS[target][0]
    inputs, _ = scorer.inputs(as_targets().iloc[[target]], catalog.rows[cat])
    ranked = scorer.stage.rank(inputs[0])
    return pd.DataFrame(ranked.features, index=catalog.item_ids[ranked.candidates.rows], columns=list(FEATURE_NAMES))


@pytest.mark.parametrize("target", [0, 3])
def test_features_use_nothing_at_or_after_the_target_time(target: int) -> None:
    """Future data (interactions on the candidates, searches, a new variant of a candidate family) at or after the
    target's time changes no candidate and no feature; the same data a day earlier changes many."""
    items = with_attributes(catalog_items())
    ev, sr = events(items), search_results(items)
    before = features_by_item(items, ev, sr, target)
    cands = before.index.to_numpy()

    def extra(at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        rng = np.random.default_rng(7)
        picks = rng.choice(cands, 60)
        more_ev = pd.DataFrame({"user_id": "zz", "session_id": 1, "action": rng.choice(["click", "purchase"], 60),
                                "timestamp": [at + pd.Timedelta(hours=float(h)) for h in rng.uniform(0, 48, 60)],
                                "item_id": picks, "query": None, "search_id": None})
        q = CONTEXTS[target][3]
        more_sr = pd.DataFrame([{"search_id": 900 + k, "user_id": "zz", "session_id": 1, "query": q,
                                 "timestamp": at + pd.Timedelta(hours=k), "item_id": i, "position": p}
                                for k in range(4) for p, i in enumerate(picks[:5], start=1)])
        fam = items.set_index("item_id").loc[cands[0]]
        new = fam.to_frame().T.reset_index(names="item_id").assign(
            item_id=cands[0] + "-new", color="teal", created_at=at + pd.Timedelta(hours=1))
        return (pd.concat([items, new], ignore_index=True), pd.concat([ev, more_ev], ignore_index=True),
                pd.concat([sr, more_sr], ignore_index=True))

    after = features_by_item(*extra(T0), target)  # from exactly the target time on
    assert list(after.index) == list(before.index)
    pd.testing.assert_frame_equal(after, before)
    earlier = features_by_item(*extra(T0 - pd.Timedelta(days=3)), target)  # the same data, before the target
    shared = earlier.index.intersection(before.index)
    changed = {c for c in FEATURE_NAMES if not np.allclose(earlier.loc[shared, c], before.loc[shared, c],
                                                           equal_nan=True)}
    assert {"pop_7d", "pop_30d", "fam_pop_7d", "season_trend", "colour_trend"} <= changed, changed
    assert cands[0] + "-new" in earlier.index  # released before the target, the new variant is a candidate


def test_no_history_and_no_search_means_no_title_list(setup) -> None:  # noqa: ANN001
    """Without a title query every cosine ties; a list cut through that tie, with the target demoted below its
    tie-mates, would mark the target (the only item of the category left out). So, as serving, there is no title
    list: the candidates are the category's recent best sellers, the same on both paths."""
    catalog, encoder, store, scorer, id_queries, memory = setup
    batch = pd.DataFrame([{"user_id": "new", "category": "Footwear", "target_ts": T0, "cold_start": False,
                           "target_item_id": "F0-red-7", "seq_actions": [], "seq_item_ids": [], "seq_queries": [],
                           "seq_search_ids": [], "seq_timestamps": []}])
    rows = catalog.rows["Footwear"]
    target = int(np.searchsorted(rows, catalog.index_of(["F0-red-7"])[0]))
    inputs, _ = scorer.inputs(batch, rows, demote=np.array([target]))
    assert len(inputs[0].title_rows) == 0 and len(inputs[0].id_rows) == 0
    assert len(inputs[0].popular_rows) >= CFG.popular
    ranked = scorer.stage.rank(inputs[0])
    assert set(ranked.candidates.rows.tolist()) == set(inputs[0].popular_rows[: CFG.popular].tolist())
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=RetrievalConfig(k=10), memory=memory,
                             ranking=scorer.stage)
    got = online.recommend(UserContext("Footwear", [], None, T0))
    assert got.items == catalog.item_ids[ranked.rows[:10]].tolist()
    assert set(got.sources.values()) == {"popularity"}


def test_llm_rank_serving_runs_the_same_two_passes_as_the_ranker_llm_evaluation(setup) -> None:  # noqa: ANN001
    """`llm-rank` with a second pass in the bundle: the ranker's top n, the tiny LLM's letter scores over them, and
    the second LambdaMART pass order them exactly as `RankerLLMScorer` does for the same target."""
    from types import SimpleNamespace

    from evaluation.llm import LLMCandidateScorer, PromptFactory, RankerLLMScorer
    from models.llm.engine import TorchEngine
    from models.llm.model import TINY, load_llm
    from models.llm.prompt import Action, CatalogItems, PromptConfig
    from models.ranker.llm_pass import fit_pass, pass_config
    from serving.llm_runtime import LLMRuntime, rank_candidates

    catalog, encoder, store, scorer, id_queries, memory = setup
    n = 8
    llm = load_llm(TINY, corpus=[*catalog.item_ids, *catalog.items["title"], "red sneakers", "warm coat"])
    engine = TorchEngine(llm.model, llm.tokenizer)
    letters = LLMCandidateScorer(None, engine, PromptFactory(memory), CatalogItems(catalog.items), catalog,
                                 PromptConfig(), n=n, batch_size=1)
    # A real second pass, fitted on these contexts' lists at other times (labels drawn at random).
    rng, lists = np.random.default_rng(6), []
    for rep in range(1, 25):
        batch = as_targets(at=T0 - pd.Timedelta(days=rep))
        for i in range(len(CONTEXTS)):
            ranked, _ = scorer.ranked_rows(batch.iloc[[i]], catalog.rows[CONTEXTS[i][0]])
            top = ranked[0].rows[:n]
            lp = letters.candidate_scores(batch.iloc[[i]].reset_index(drop=True), [top])[0]
            y = np.zeros(len(top), np.float32)
            y[rng.choice(len(top), p=np.exp(lp) / np.exp(lp).sum())] = 1  # the LLM's favourites bought more
            lists.append((ranked[0].scores[:n], lp, y))
    second = fit_pass(lists, replace(pass_config(0), min_data_in_leaf=5, bags=2, max_rounds=30, min_rounds=5))
    assert second.boosters, second.info

    evaluation = RankerLLMScorer(scorer, letters, second, n)
    online = OnlineRetriever(store, catalog.items, encoder, id_queries, cfg=RetrievalConfig(k=100), memory=memory,
                             ranking=scorer.stage)
    runtime = LLMRuntime(llm, engine, "tiny", lambda ids: None, PromptConfig(), None, False, n)
    bundle = SimpleNamespace(retriever=online, catalog_items=CatalogItems(catalog.items), second_pass=second)
    batch = as_targets()
    moved = 0
    for i in range(len(CONTEXTS)):
        rows = catalog.rows[CONTEXTS[i][0]]
        expect = catalog.item_ids[rows[np.argsort(-evaluation(batch.iloc[[i]], rows)[0], kind="stable")]][:10]
        row = batch.iloc[i]
        actions = [Action(a, it or None, q or None)
                   for a, it, q in zip(row["seq_actions"], row["seq_item_ids"], row["seq_queries"], strict=True)]
        rec = online.recommend(context(i))
        got, _, info = rank_candidates(runtime, bundle, f"u{i}", context(i), actions, rec, T0)
        assert got[:10] == expect.tolist(), f"context {i}"
        assert info.reordered_by == "ranker-llm" and info.candidates == rec.items[:n]
        moved += got[:n] != rec.items[:n]
    assert moved, "the second pass changes the ranker's order somewhere (else this test shows nothing)"
    runtime.close()
    # A second pass that kept the ranker's order (no boosters): the answer is the ranker's, and the LLM is not asked.
    kept = SimpleNamespace(retriever=online, catalog_items=CatalogItems(catalog.items),
                           second_pass=LearnedRanker([], second.features))
    idle = LLMRuntime(None, None, "tiny", lambda ids: None, PromptConfig(), None, False, n)  # no engine to call
    rec = online.recommend(context(0))
    got, _, info = rank_candidates(idle, kept, "u0", context(0), [], rec, T0)
    assert got == rec.items and info.reordered_by == "ranker"
    idle.close()


def test_ranker_llm_with_a_pass_that_kept_the_ranker_ranks_every_target_as_the_ranker(setup) -> None:  # noqa: ANN001
    """The evaluation's tie rule must not turn "no second pass" into "every top-20 row ties with the target"."""
    from evaluation.llm import LLMCandidateScorer, PromptFactory, RankerLLMScorer
    from models.llm.engine import TorchEngine
    from models.llm.model import TINY, load_llm
    from models.llm.prompt import CatalogItems, PromptConfig
    from models.ranker.llm_pass import PASS_FEATURES

    catalog, encoder, store, scorer, id_queries, memory = setup
    llm = load_llm(TINY, corpus=[*catalog.item_ids, *catalog.items["title"]])
    letters = LLMCandidateScorer(None, TorchEngine(llm.model, llm.tokenizer), PromptFactory(memory),
                                 CatalogItems(catalog.items), catalog, PromptConfig(), n=8, batch_size=1)
    targets = as_targets(["F0-red-8", "F2-blue-9", "C0-blue-7", "C3-red-7", "C1-red-7"])
    alone = evaluate("ranker", scorer, targets, catalog, progress=False).rankings["target_rank"].tolist()
    both = evaluate("ranker-llm", RankerLLMScorer(scorer, letters, LearnedRanker([], PASS_FEATURES), 8), targets,
                    catalog, progress=False).rankings["target_rank"].tolist()
    assert both == alone and min(alone) <= 8  # some target is among the 8 the second pass would re-order
