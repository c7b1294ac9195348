"""The learned ranker: LightGBM's LambdaMART (`objective="lambdarank"`) over the candidates' `FEATURES`.

Trained on validation-period targets (one query group per target: its candidates, label 1 on the bought item),
early-stopped on a seeded held-out share of those groups, deterministic for a seed and thread count, and saved as
LightGBM's text model beside a JSON with its feature list, config and training facts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np


@dataclass(frozen=True)
class RankerConfig:
    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping: int = 50  # rounds without a better held-out NDCG@10
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    truncation: int = 20  # lambdarank_truncation_level
    valid_frac: float = 0.2  # share of the training groups held out for early stopping
    seed: int = 0
    threads: int = 2  # LightGBM is deterministic for a seed and a thread count


@dataclass
class LearnedRanker:
    booster: lgb.Booster | None  # None: a constant ranker (no usable training group)
    features: tuple[str, ...]
    cfg: RankerConfig = field(default_factory=RankerConfig)
    info: dict = field(default_factory=dict)

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n,) float64 scores of candidate rows x (n, len(features))."""
        if x.shape[1] != len(self.features):
            raise ValueError(f"ranker expects {len(self.features)} features, got {x.shape[1]}")
        if self.booster is None or len(x) == 0:
            return np.zeros(len(x))
        return np.asarray(self.booster.predict(x, num_threads=1), np.float64)

    def importances(self) -> dict[str, float]:
        """Total gain per feature, largest first (0 for unused features)."""
        if self.booster is None:
            return {f: 0.0 for f in self.features}
        gain = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.features, map(float, gain), strict=True), key=lambda kv: -kv[1]))

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            self.booster.save_model(str(directory / "model.txt"))
        (directory / "ranker.json").write_text(json.dumps({
            "features": list(self.features), "cfg": asdict(self.cfg), "info": self.info,
            "importances": self.importances(), "constant": self.booster is None}, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> LearnedRanker:
        directory = Path(directory)
        meta = json.loads((directory / "ranker.json").read_text())
        booster = None if meta["constant"] else lgb.Booster(model_file=str(directory / "model.txt"))
        return cls(booster, tuple(meta["features"]), RankerConfig(**meta["cfg"]), meta.get("info", {}))

    def plot_importance(self, path: Path, top: int = 30) -> Path:
        """A horizontal bar chart of the `top` features by gain (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        imp = list(self.importances().items())[:top][::-1]
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(imp) + 1.2))
        ax.barh([k for k, _ in imp], [v for _, v in imp], color="#3b6ea5")
        ax.set_xlabel("total gain")
        ax.set_title(f"Ranker feature importance (top {len(imp)} of {len(self.features)})")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def fit_ranker(groups: Sequence[tuple[np.ndarray, np.ndarray]], features: Sequence[str],
               cfg: RankerConfig = RankerConfig()) -> LearnedRanker:
    """LambdaMART on (features (n, F), labels (n,)) query groups; groups without a positive are skipped."""
    t0 = time.perf_counter()
    usable = [(x, y) for x, y in groups if len(x) and y.max() > 0]
    info: dict = {"groups": len(groups), "used": len(usable), "skipped_no_positive": len(groups) - len(usable)}
    if len(usable) < 2:
        return LearnedRanker(None, tuple(features), cfg, {**info, "fitted": False})
    rng = np.random.default_rng(cfg.seed)
    held = rng.random(len(usable)) < cfg.valid_frac
    if held.all() or not held.any():
        held = np.arange(len(usable)) % 5 == 0
    params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1,
        "lambda_l2": cfg.lambda_l2, "lambdarank_truncation_level": cfg.truncation, "seed": cfg.seed,
        "deterministic": True, "force_row_wise": True, "num_threads": cfg.threads, "verbosity": -1,
    }

    def dataset(mask: np.ndarray, ref: lgb.Dataset | None = None) -> lgb.Dataset:
        part = [usable[i] for i in np.flatnonzero(mask)]
        x = np.concatenate([g[0] for g in part]).astype(np.float32)
        y = np.concatenate([g[1] for g in part]).astype(np.float32)
        return lgb.Dataset(x, y, group=[len(g[0]) for g in part], feature_name=list(features), reference=ref,
                           free_raw_data=False)

    train = dataset(~held)
    valid = dataset(held, train)
    curve: dict = {}
    booster = lgb.train(params, train, num_boost_round=cfg.max_rounds, valid_sets=[valid], valid_names=["held_out"],
                        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False),
                                   lgb.record_evaluation(curve)])
    info |= {"fitted": True, "train_groups": int((~held).sum()), "held_out_groups": int(held.sum()),
             "rows": int(sum(len(x) for x, _ in usable)), "best_iteration": int(booster.best_iteration),
             "held_out_ndcg@10": float(curve["held_out"]["ndcg@10"][booster.best_iteration - 1]),
             "seconds": round(time.perf_counter() - t0, 2)}
    booster = booster if booster.best_iteration <= 0 else _truncated(booster)
    return LearnedRanker(booster, tuple(features), cfg, info)


def _truncated(booster: lgb.Booster) -> lgb.Booster:
    """The booster cut at its best iteration (so `predict` and the saved model agree)."""
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
