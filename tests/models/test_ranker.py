"""The LambdaMART ranker: real LightGBM on small synthetic query groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.ranker.model import LearnedRanker, RankerConfig, best_round, fit_ranker

FEATURES = ("signal", "noise_a", "noise_b")
SMALL = RankerConfig(min_data_in_leaf=5, max_rounds=40, min_rounds=5, bags=3, threads=2)


def groups(n: int = 120, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Query groups of 20 candidates; the bought one has the largest `signal` (plus noise features)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=(20, 3)).astype(np.float32)
        y = np.zeros(20, np.float32)
        y[np.argmax(x[:, 0] + 0.3 * rng.normal(size=20))] = 1.0
        out.append((x, y))
    return out


def test_fit_is_deterministic_and_learns_the_signal() -> None:
    train = groups()
    a, b = fit_ranker(train, FEATURES, SMALL), fit_ranker(train, FEATURES, SMALL)
    x = np.concatenate([g[0] for g in groups(10, seed=1)])
    np.testing.assert_array_equal(a.score(x), b.score(x))
    assert a.info["bags"] == b.info["bags"] and len(a.boosters) == 3
    assert max(a.importances(), key=a.importances().get) == "signal"
    hits = [int(np.argmax(a.score(gx)) == np.argmax(gy)) for gx, gy in groups(50, seed=2)]
    assert np.mean(hits) > 0.5  # far above the 1/20 of a random order
    c = fit_ranker(train, FEATURES, RankerConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(a.score(x), c.score(x))  # the seed matters: the bag's folds differ


def test_save_and_load_give_the_same_scores(tmp_path: Path) -> None:
    model = fit_ranker(groups(), FEATURES, SMALL)
    model.save(tmp_path / "r")
    png = model.plot_importance(tmp_path / "r" / "importance.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    back = LearnedRanker.load(tmp_path / "r")
    x = np.concatenate([g[0] for g in groups(5, seed=3)])
    np.testing.assert_array_equal(back.score(x), model.score(x))
    assert back.features == FEATURES and back.cfg == SMALL
    with pytest.raises(ValueError, match="expects 3 features"):
        back.score(x[:, :2])


def test_without_positives_the_ranker_is_constant() -> None:
    empty = [(x, np.zeros(len(x), np.float32)) for x, _ in groups(20)]
    model = fit_ranker(empty, FEATURES, SMALL)
    assert not model.boosters and model.info["used"] == 0
    assert (model.score(empty[0][0]) == 0).all()


def test_best_round_skips_an_early_noisy_peak() -> None:
    curve = np.array([0.5, 0.1, 0.1, 0.2, 0.3, 0.35, 0.4, 0.42, 0.41, 0.40])
    assert int(np.argmax(curve)) + 1 == 1  # the raw maximum is the first round
    assert best_round(curve, min_rounds=3, smooth=3) == 9  # rounds 7-9 have the best trailing mean (.41)
    assert best_round(curve[:2], min_rounds=3, smooth=3) == 2  # shorter than min_rounds: all of it


def _popularity_case():  # noqa: ANN202
    """A catalog of five items, their events around one day, and the feature context over them."""
    import pandas as pd

    from feature_repo.activity import ActivityTable
    from models.ranker.features import FeatureContext
    from models.variants import ItemAttributes

    day = pd.Timestamp("2024-03-10", tz="UTC")
    items = pd.DataFrame({"item_id": ["A", "B", "C", "D", "Z"], "family_id": ["a", "b", "c", "d", "z"],
                          "category": ["Bags"] * 4 + ["Shoes"], "title": ["x"] * 5, "size": "M", "color": "red",
                          "subcategory": "bag",
                          "created_at": pd.Timestamp("2024-01-01", tz="UTC")})
    rows = [("A", -2, "click"), ("A", -3, "click"),  # A: 2 interactions, 0 purchases
            ("B", -1, "purchase"), ("B", -40, "click"),  # B: 1 in the window (day -40 is outside it)
            ("C", -5, "click"), ("C", -6, "purchase"),  # C: 2 interactions, 1 purchase -> ahead of A
            ("D", 0, "purchase"), ("D", 0, "purchase"), ("D", 0, "purchase"),  # D: only on the target's day
            ("Z", -1, "purchase"), ("Z", -2, "purchase"), ("Z", -3, "purchase")]  # another category
    events = pd.DataFrame({"user_id": "u", "timestamp": [day + pd.Timedelta(days=d, hours=5) for _, d, _ in rows],
                           "action": [a for _, _, a in rows], "item_id": [i for i, _, _ in rows]})
    attrs = ItemAttributes.from_items(items)
    ctx = FeatureContext(attrs, items, ActivityTable.build(events, items), id_vectors=lambda r: r,
                         title_vectors=lambda r: r)
    return ctx, events, items, attrs, day


def test_popularity_source_by_hand() -> None:
    """The category's most interacted-with items in the 30 days before the target's day; the target's own day and
    other categories never count; ties by purchases, then item id."""
    import pandas as pd

    from models.ranker.candidates import CandidateConfig, TargetInputs, generate

    ctx, _, _, attrs, day = _popularity_case()
    bags = int(attrs.category[0])
    t = (day + pd.Timedelta(hours=20)).value  # later on the target's day: D's purchases that day still don't count
    assert ctx.popular(bags, t, 10).tolist() == [2, 0, 1]  # C, A, B
    assert ctx.popular(bags, t, 2).tolist() == [2, 0]
    assert ctx.popular(bags, (day + pd.Timedelta(days=1)).value, 10).tolist()[0] == 3  # next day: D leads (3)
    assert ctx.popular(bags, (day - pd.Timedelta(days=60)).value, 10).tolist() == []
    inp = TargetInputs(category=bags, t_ns=t, hist_rows=np.zeros(0, np.int64), hist_buy=np.zeros(0, bool),
                       hist_ms=np.zeros(0, np.int64), id_rows=np.zeros(0, np.int64), title_rows=np.zeros(0, np.int64),
                       memory_rows=np.zeros(0, np.int64), popular_rows=ctx.popular(bags, t, 30))
    cand = generate(inp, attrs, CandidateConfig(popular=2))
    assert cand.rows.tolist() == [0, 2] and cand.ranks["popularity"].tolist() == [1, 0]


def test_popularity_index_from_the_cache_equals_the_computed_one(tmp_path: Path) -> None:
    """A table read from a file keeps its popularity index in the cache; the next context over the same file and
    catalog reads it back equal; another catalog order is another entry."""
    from feature_repo.activity import ActivityTable
    from models.ranker.features import FeatureContext
    from models.variants import ItemAttributes

    ctx, events, items, _, _ = _popularity_case()
    path = ActivityTable.build(events, items).write(tmp_path / "activity.parquet")
    computed = ctx._popular_index(100)

    def fresh(frame):  # noqa: ANN001, ANN202
        table = ActivityTable.read(path, cache=tmp_path / "act")
        return FeatureContext(ItemAttributes.from_items(frame), frame, table, id_vectors=lambda r: r,
                              title_vectors=lambda r: r)

    first = fresh(items)._cached_popular_index(100, cache=tmp_path / "pop")
    entries = list((tmp_path / "pop").glob("popular-*.npz"))
    assert len(entries) == 1
    again = fresh(items)._cached_popular_index(100, cache=tmp_path / "pop")
    for got in (first, again):
        assert got.keys() == computed.keys() and all(np.array_equal(got[k], computed[k]) for k in computed)
    reordered = items.iloc[::-1].reset_index(drop=True)
    fresh(reordered)._cached_popular_index(100, cache=tmp_path / "pop")
    assert len(list((tmp_path / "pop").glob("popular-*.npz"))) == 2


def test_out_of_fold_scores_come_from_the_booster_that_held_each_group_out() -> None:
    train = groups(60)
    train[3] = (train[3][0], np.zeros(20, np.float32))  # no positive: no booster trains on it
    cfg = RankerConfig(**{**SMALL.__dict__, "bags": 5})  # valid_frac 0.2: 5 folds, each group held out once
    model = fit_ranker(train, FEATURES, cfg)
    assert len(model.oof) == len(train) and model.info["oof_in_sample_groups"] == 0
    np.testing.assert_array_equal(model.oof[3], model.score(train[3][0]))  # skipped: the whole bag's score
    source = []
    for i, (x, _) in enumerate(train):
        if i == 3:
            continue
        match = [b for b, booster in enumerate(model.boosters)
                 if np.array_equal(booster.predict(x, num_threads=1), model.oof[i])]  # exactly, threads or not
        assert len(match) == 1, f"group {i}: out-of-fold scores should be exactly one booster's"
        source.append(match[0])
        assert not np.allclose(model.oof[i], model.score(x))  # not the in-sample bag mean
    # Each booster is the source for exactly the groups it held out.
    assert np.bincount(source, minlength=5).tolist() == [b["held_out_groups"] for b in model.info["bags"]]


def test_second_pass_features_by_hand() -> None:
    from models.ranker.llm_pass import PASS_FEATURES, pass_features

    x = pass_features(np.array([3.0, 2.0, 2.0]), np.log([0.2, 0.5, 0.3]))
    assert x.shape == (3, len(PASS_FEATURES))
    col = dict(zip(PASS_FEATURES, x.T, strict=True))
    np.testing.assert_array_equal(col["first_rank"], [0, 1, 2])
    np.testing.assert_allclose(col["first_gap"], [0, -1, -1])
    sd = np.std([3.0, 2, 2])
    np.testing.assert_allclose(col["first_z"], [(3 - 7 / 3) / sd, (2 - 7 / 3) / sd, (2 - 7 / 3) / sd])
    np.testing.assert_array_equal(col["llm_rank"], [2, 0, 1])
    np.testing.assert_allclose(col["llm_gap"], np.log([0.2, 0.5, 0.3]) - np.log(0.5))
    with pytest.raises(ValueError, match="differ in shape"):
        pass_features(np.zeros(3), np.zeros(2))


def test_second_pass_learns_to_follow_an_informative_llm_and_ties_put_the_target_last() -> None:
    from models.ranker.llm_pass import fit_pass, pass_config, second_pass

    rng = np.random.default_rng(0)
    lists = []
    for _ in range(150):  # the first pass's order is noise; the LLM's favourite is the bought item
        first = np.sort(rng.normal(size=20))[::-1]
        y = np.zeros(20, np.float32)
        y[rng.integers(20)] = 1
        llm = np.log(np.where(y > 0, 0.6, 0.4 / 19)) + 0.05 * rng.normal(size=20)
        lists.append((first, llm, y))
    model = fit_pass(lists[:120], pass_config(0))
    assert model.boosters and model.info["cross_fitted_ndcg@10"] > model.info["first_pass_ndcg@10"]
    assert max(model.importances(), key=model.importances().get).startswith("llm")
    hits = [second_pass(np.arange(20), f, m, model)[0][0] == np.argmax(y) for f, m, y in lists[120:]]
    assert np.mean(hits) > 0.9
    # A constant second pass keeps the first pass's order exactly; the demoted row goes after the rows it ties with
    # on both scores only (a tie in the second pass alone is broken by the first).
    flat = LearnedRanker([], model.features)
    rows, _ = second_pass(np.array([7, 5, 9]), np.array([2.0, 1, 0]), np.zeros(3), flat, demote=5)
    assert rows.tolist() == [7, 5, 9]
    rows, _ = second_pass(np.array([7, 5, 9]), np.array([2.0, 1, 1]), np.zeros(3), flat, demote=5)
    assert rows.tolist() == [7, 9, 5]


def test_ndcg_at_by_hand_and_a_useless_llm_keeps_the_first_pass() -> None:
    from models.ranker.llm_pass import fit_pass, ndcg_at, pass_config

    assert ndcg_at(np.array([3.0, 2, 1]), np.array([0, 1, 0])) == pytest.approx(1 / np.log2(3))
    assert ndcg_at(np.array([1.0, 1, 1]), np.array([1, 0, 0])) == pytest.approx(1 / np.log2(4))  # ties: last
    assert ndcg_at(np.arange(20.0), np.eye(20)[0]) == 0.0  # ranked 20th: outside the top 10
    rng = np.random.default_rng(1)
    lists = []
    p = 1 / np.arange(1, 21) ** 2
    for _ in range(150):  # the first pass's order is the best there is (the bought item's odds fall with its rank)
        y = np.zeros(20, np.float32)  # and the LLM is noise
        y[rng.choice(20, p=p / p.sum())] = 1
        lists.append((np.sort(rng.normal(size=20))[::-1], np.log(rng.dirichlet(np.ones(20))), y))
    model = fit_pass(lists, pass_config(0))
    assert not model.boosters and "does not beat the first pass" in model.info["kept_first_pass"]
    assert model.info["first_pass_ndcg@10"] >= model.info["cross_fitted_ndcg@10"]


def test_top_lists_order_by_the_given_scores_with_the_target_after_its_ties() -> None:
    import pandas as pd

    from evaluation.ranking import Examples, top_lists
    from models.catalog import Catalog
    from tests.helpers import T0, catalog_items

    catalog = Catalog.from_items(catalog_items())
    ids = catalog.item_ids
    targets = pd.DataFrame({"user_id": ["a", "b"], "target_ts": [T0, T0], "target_item_id": [ids[2], ids[9]]})
    rows = [np.array([1, 2, 3, 4]), np.array([5, 6, 7])]
    ex = Examples(groups=[], positions=[1, 0], rows=rows, recall={}, mean_candidates=0.0, seconds=0.0)
    # Position 1's target (ids[9]) is not a candidate; position 0's (ids[2]) neither.
    scores = [np.array([0.5, 0.1, 0.9, 0.3]), np.array([1.0, 1.0, 0.2])]
    out = top_lists(ex, scores, targets, catalog, n=2)
    assert out["position"].tolist() == [1, 0] and out["user_id"].tolist() == ["b", "a"]
    assert list(out.loc[0, "items"]) == [ids[3], ids[1]] and list(out.loc[0, "scores"]) == [0.9, 0.5]
    assert list(out.loc[1, "items"]) == [ids[5], ids[6]]  # tied: candidate order
    assert not out["hit"].any()
    targets.loc[0, "target_item_id"] = ids[5]  # now the target ties with row 6: it goes after it
    out = top_lists(ex, scores, targets, catalog, n=2)
    assert list(out.loc[1, "items"]) == [ids[6], ids[5]] and out.loc[1, "hit"] and not out.loc[0, "hit"]


def test_compiled_bag_scores_the_same_floats_and_is_cached(tmp_path: Path) -> None:
    """lleaves' native code scores exactly as LightGBM's predict (NaNs included), and the second compile of the same
    boosters loads the cached objects; a booster that changes gets its own."""
    train = groups()
    model = fit_ranker(train, FEATURES, SMALL)
    x = np.concatenate([g[0] for g in groups(30, seed=3)])
    x[::7, 1] = np.nan
    expect = model.score(x)
    bag = model.compile(tmp_path)
    assert bag is model.compiled and bag.cached == 0 and len(bag.models) == 3
    got = model.score(x)  # now through the compiled bag
    assert got.dtype == np.float64 and np.array_equal(got, expect)
    assert len(list(tmp_path.glob("*.so"))) == 3
    again = LearnedRanker(model.boosters, model.features, model.cfg)
    assert again.compile(tmp_path).cached == 3 and np.array_equal(again.score(x), expect)
    other = fit_ranker(train, FEATURES, RankerConfig(**{**SMALL.__dict__, "seed": 1}))
    assert other.compile(tmp_path).cached == 0 and len(list(tmp_path.glob("*.so"))) == 6
    assert not np.array_equal(other.score(x), expect)


def test_query_match_features_by_hand() -> None:
    """Overlap (share of the query's tokens in the title), coverage (share of the title's tokens in the query), and
    whether brand, colour and size are all named; punctuation at a token's ends does not count."""
    import pandas as pd

    from feature_repo.activity import ActivityTable
    from models.ranker.features import FeatureContext, match_tokens
    from models.variants import ItemAttributes

    items = pd.DataFrame({"item_id": ["A", "B", "C"], "family_id": ["f", "f", "g"], "category": "Hats",
                          "subcategory": "hat", "brand": ["Peathoni", "Peathoni", "Other Co"],
                          "title": ["Peathoni Beret - Royal Blue, M/L", "Peathoni Beret - Black, S/M",
                                    "Other Co Bucket Hat - Blue"],
                          "color": ["Royal Blue", "Black", "Blue"], "size": ["M/L", "S/M", "One Size"],
                          "created_at": pd.Timestamp("2024-01-01", tz="UTC")})
    ctx = FeatureContext(ItemAttributes.from_items(items), items,
                         ActivityTable.build(pd.DataFrame({"user_id": [], "timestamp": pd.to_datetime([], utc=True),
                                                           "action": [], "item_id": []}), items),
                         id_vectors=lambda r: r, title_vectors=lambda r: r)
    assert match_tokens("Beret - Royal Blue, M/L") == {"beret", "royal", "blue", "m/l"}
    rows = np.array([0, 1, 2])
    f = ctx.query_match(rows, "peathoni beret royal blue m/l")  # A's title, typed without punctuation
    np.testing.assert_allclose(f["query_overlap"], [1.0, 2 / 5, 1 / 5])
    np.testing.assert_allclose(f["query_coverage"], [1.0, 2 / 4, 1 / 5])  # A: 5 of 5; B: 2 of 4; C: blue of 5
    assert f["query_brand"].tolist() == [1, 1, 0] and f["query_colour"].tolist() == [1, 0, 1]
    assert f["query_size"].tolist() == [1, 0, 0]
    g = ctx.query_match(rows, "peathoni beret")  # the product's name: every variant covers it alike
    np.testing.assert_allclose(g["query_overlap"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(g["query_coverage"], [2 / 5, 2 / 4, 0.0])


def test_monotone_features_never_lower_a_score_and_extra_groups_only_train() -> None:
    """A monotone feature: raising it never lowers the score, whatever the others. Extra groups are trained on but
    neither held out nor scored out of fold."""
    rng = np.random.default_rng(0)
    train = groups(80)
    cfg = RankerConfig(**{**SMALL.__dict__, "monotone": (("signal", 1),)})
    model = fit_ranker(train, FEATURES, cfg)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    hi = x.copy()
    hi[:, 0] += rng.uniform(0, 2, size=200).astype(np.float32)
    assert (model.score(hi) >= model.score(x) - 1e-12).all()
    extra = groups(30, seed=9)
    with_extra = fit_ranker(train, FEATURES, SMALL, extra=extra)
    alone = fit_ranker(train, FEATURES, SMALL)
    assert with_extra.info["extra_groups"] == 30 and alone.info["extra_groups"] == 0
    assert len(with_extra.oof) == len(train)
    assert [b["held_out_groups"] for b in with_extra.info["bags"]] == [b["held_out_groups"] for b in alone.info["bags"]]
    assert not np.allclose(with_extra.score(x), alone.score(x))  # they were trained on
    # Copies of training groups: a booster never trains on the copy of a group it holds out.
    copies = [(g[0].copy(), g[1].copy()) for g in train]
    sourced = fit_ranker(train, FEATURES, SMALL, extra=copies, extra_source=list(range(len(train))))
    for bag in sourced.info["bags"]:
        assert bag["extra_groups"] == len(train) - bag["held_out_groups"]
    assert all(b["extra_groups"] == len(train) for b in fit_ranker(train, FEATURES, SMALL, extra=copies).info["bags"])
    with pytest.raises(ValueError, match="extra_source"):
        fit_ranker(train, FEATURES, SMALL, extra=copies, extra_source=[0])


def test_ranker_targets_are_a_seeded_sample_past_the_cap() -> None:
    """Every validation target up to `max_targets`; past it that many, a subset in their order, the same for a seed."""
    import pandas as pd

    from evaluation.ranking import ranker_targets

    targets = pd.DataFrame({"user_id": [f"u{i}" for i in range(10)], "target_item_id": [f"I{i}" for i in range(10)]})
    assert ranker_targets(targets, RankerConfig(max_targets=10)) is targets
    assert ranker_targets(targets, RankerConfig(max_targets=0)) is targets
    four = ranker_targets(targets, RankerConfig(max_targets=4))
    users = four["user_id"].tolist()
    assert len(users) == 4 and users == sorted(set(users), key=lambda u: int(u[1:])) and list(four.index) == [0, 1, 2, 3]
    assert ranker_targets(targets, RankerConfig(max_targets=4))["user_id"].tolist() == users
    assert len({tuple(ranker_targets(targets, RankerConfig(max_targets=4, seed=s))["user_id"]) for s in range(5)}) > 1
    assert RankerConfig().max_targets == 2_000


def test_navigational_copies_name_the_bought_item_just_before_it() -> None:
    import pandas as pd

    from evaluation.ranking import navigational_targets, product_name
    from models.catalog import Catalog

    items = pd.DataFrame({"item_id": [f"I{i}" for i in range(10)], "category": "Hats",
                          "title": [f"Brand{i} Beret - Navy Blue, M/L" for i in range(10)], "color": "Navy Blue",
                          "size": "M/L", "created_at": pd.Timestamp("2024-01-01", tz="UTC")})
    t = pd.Timestamp("2024-02-01", tz="UTC")
    targets = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(10)], "target_item_id": [f"I{i}" for i in range(10)],
        "target_ts": [t + pd.Timedelta(hours=i) for i in range(10)], "category": "Hats", "n_history": 2,
        "seq_actions": [np.array(["click", "search"], object)] * 10, "seq_item_ids": [np.array(["I9", ""], object)] * 10,
        "seq_queries": [np.array(["", "hat"], object)] * 10, "seq_search_ids": [np.array([-1, 7])] * 10,
        "seq_timestamps": [np.array([int(t.value // 10**6) - 5000, int(t.value // 10**6) - 4000])] * 10})
    before = targets.copy(deep=True)
    nav = navigational_targets(targets, Catalog.from_items(items), 0.5, seed=0)
    assert len(nav) == 5 and nav["user_id"].str.endswith("#nav").all()
    assert sorted(nav["source"]) == sorted(set(nav["source"])) and all(  # each copy knows its original
        targets["target_item_id"].iloc[s] == i for s, i in zip(nav["source"], nav["target_item_id"], strict=True))
    assert product_name("Brand3 Beret - Navy Blue, M/L", "Navy Blue", "M/L") == "brand3 beret"
    kinds = set()
    for row in nav.itertuples(index=False):
        i = int(row.target_item_id[1:])
        q = row.seq_queries[-1]
        assert row.seq_actions[-1] == "search" and row.seq_search_ids[-1] == -1
        assert row.seq_timestamps[-1] == row.target_ts.value // 10**6 - 1  # strictly before the target
        assert q in (f"Brand{i} Beret - Navy Blue, M/L", f"brand{i} beret")
        kinds.add((q.startswith("Brand"), len(row.seq_actions)))
        assert len(row.seq_actions) in (1, 3) and row.n_history == len(row.seq_actions)
    assert len({k[0] for k in kinds}) == 2 and len({k[1] for k in kinds}) == 2  # both queries, with and without history
    pd.testing.assert_frame_equal(targets, before)  # the originals are untouched
    assert navigational_targets(targets, Catalog.from_items(items), 0.0).empty


def test_title_tokens_cached_equal_computed(tmp_path: Path) -> None:
    """The cached token arrays are the computed ones; a damaged entry is computed again; other titles, other entry."""
    from models.ranker.features import match_tokens, title_tokens

    titles = np.array(["Peathoni Beret - Royal Blue, M/L", "Acme Sneaker Red", "Acme Sneaker Red", ""], dtype=object)
    first = title_tokens(titles, cache=tmp_path)
    (entry,) = list(tmp_path.glob("*.npz"))
    second = title_tokens(titles, cache=tmp_path)
    for a, b in ((first.title_of_row, second.title_of_row), (first.title_ids, second.title_ids),
                 (first.title_ptr, second.title_ptr)):
        assert np.array_equal(a, b)
    assert first.vocab == second.vocab
    for r, title in enumerate(titles):  # each row's tokens are match_tokens of its title
        t = first.title_of_row[r]
        got = {second.vocab[i] for i in second.title_ids[second.title_ptr[t]:second.title_ptr[t + 1]]}
        assert got == set(match_tokens(title)), title
    entry.write_bytes(b"not an npz")
    assert title_tokens(titles, cache=tmp_path).vocab == first.vocab
    title_tokens(titles[:2], cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_source_ranks_by_hand_and_against_the_plain_loops() -> None:
    from models.ranker.candidates import _best_rank, _first_rank

    rows = np.array([2, 5, 7, 9])
    # First position in a list with a repeat; best position over two lists; absent rows are -1.
    assert _first_rank(rows, np.array([7, 2, 7])).tolist() == [1, -1, 0, -1]
    assert _best_rank(rows, [np.array([9, 5]), np.array([5, 2, 9])]).tolist() == [1, 0, -1, 0]
    assert _best_rank(rows, []).tolist() == [-1, -1, -1, -1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        lists = [rng.integers(0, 40, rng.integers(0, 30)) for _ in range(3)]
        rows = np.unique(np.concatenate([*lists, rng.integers(0, 40, 5)]))
        first = {}
        for p, r in enumerate(lists[0].tolist()):
            first.setdefault(r, p)
        best: dict[int, int] = {}
        for s in lists:
            for p, r in enumerate(s.tolist()):
                best[r] = min(best.get(r, p), p)
        assert _first_rank(rows, lists[0]).tolist() == [first.get(r, -1) for r in rows.tolist()]
        assert _best_rank(rows, lists).tolist() == [best.get(r, -1) for r in rows.tolist()]


def test_position_in_equals_pandas_get_indexer() -> None:
    import pandas as pd

    from models.ranker.features import _position_in

    assert _position_in(np.array([9, 4, 7]), np.array([7, 1, 9, 4, 4])).tolist() == [2, -1, 0, 1, 1]
    assert _position_in(np.zeros(0, np.int64), np.array([3])).tolist() == [-1]
    rng = np.random.default_rng(1)
    for _ in range(50):
        listed = pd.unique(rng.integers(0, 60, rng.integers(1, 40)))
        rows = rng.integers(0, 70, rng.integers(0, 50))
        assert _position_in(listed, rows).tolist() == pd.Index(listed).get_indexer(rows).tolist()
