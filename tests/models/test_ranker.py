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
