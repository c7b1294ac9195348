"""The learned ranker: LightGBM's LambdaMART (`objective="lambdarank"`) over the candidates' `FEATURES`.

Trained on validation-period targets (one query group per target: its candidates, label 1 on the bought item),
early-stopped on seeded held-out folds of those groups (a bag of boosters, one per fold), deterministic for a seed and thread count, and saved as
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

from models.ranker.compiled import CompiledBag, compile_ranker


@dataclass(frozen=True)
class RankerConfig:
    num_leaves: int = 15
    learning_rate: float = 0.03
    max_rounds: int = 600
    early_stopping: int = 100  # rounds without a better held-out NDCG@10 end training
    min_rounds: int = 20  # the chosen round count is at least this
    smooth: int = 10  # rounds in the moving average of the held-out curve the round count is chosen on
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    truncation: int = 20  # lambdarank_truncation_level
    valid_frac: float = 0.2  # share of the training groups each booster holds out for early stopping
    bags: int = 5  # boosters, each held out on a different fold; scores are averaged
    seed: int = 0
    threads: int = 2  # LightGBM is deterministic for a seed and a thread count
    # Features whose effect is held to one direction (LightGBM's monotone constraints): a title that matches more of
    # the query, or that the query names more fully, never scores lower for it, all else equal.
    monotone: tuple[tuple[str, int], ...] = (("query_overlap", 1), ("query_coverage", 1))
    # Share of the training targets also given as navigational copies, whose last query names the bought item
    # (`evaluation.ranking.navigational_targets`): extra training groups, never held out.
    navigational: float = 0.2
    # At most this many validation targets train it (`evaluation.ranking.ranker_targets`, a seeded sample; 0: every
    # one). LambdaMART's cost is rows x rounds, and early stopping runs more rounds on more data: on medium-s0 x 2 the
    # fit took 4.2x medium-s0's for 2.2x the rows. 2,000 is above medium-s0's 1,493 validation targets.
    max_targets: int = 2_000


@dataclass
class LearnedRanker:
    boosters: list[lgb.Booster]  # the bag (empty: a constant ranker, no usable training group)
    features: tuple[str, ...]
    cfg: RankerConfig = field(default_factory=RankerConfig)
    info: dict = field(default_factory=dict)
    # Out-of-fold scores of the training groups, aligned with `fit_ranker`'s `groups` (not saved): each group scored
    # by the boosters that held it out, so a model fitted on these groups (the LLM pass) sees first-pass scores as
    # they are on unseen targets. A group no booster held out (or one skipped for having no positive, which no
    # booster trained on) gets the whole bag's score.
    oof: list[np.ndarray] = field(default_factory=list, repr=False)
    # The boosters compiled to native code (`models.ranker.compiled`, serving sets it): the same floats, faster.
    compiled: CompiledBag | None = field(default=None, repr=False, compare=False)

    def score(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """(n,) float64 scores of candidate rows x (n, len(features)); LightGBM's predict on `threads` threads (one,
        for a request among a service's workers; the evaluation's batches take more) gives the same floats."""
        if x.shape[1] != len(self.features):
            raise ValueError(f"ranker expects {len(self.features)} features, got {x.shape[1]}")
        if not self.boosters or len(x) == 0:
            return np.zeros(len(x))
        if self.compiled is not None:
            return self.compiled.predict(x)
        return np.mean([b.predict(x, num_threads=threads) for b in self.boosters], axis=0).astype(np.float64)

    def compile(self, cache: Path | None = None) -> CompiledBag | None:
        """Compile the bag (`compile_ranker`; checked bit-identical) and score with it from now on."""
        if self.boosters:
            self.compiled = compile_ranker(self.boosters, len(self.features), cache)
        return self.compiled

    def importances(self) -> dict[str, float]:
        """Total gain per feature, largest first (0 for unused features)."""
        if not self.boosters:
            return {f: 0.0 for f in self.features}
        gain = np.mean([b.feature_importance(importance_type="gain") for b in self.boosters], axis=0)
        return dict(sorted(zip(self.features, map(float, gain), strict=True), key=lambda kv: -kv[1]))

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("model_*.txt"):
            old.unlink()
        for i, b in enumerate(self.boosters):
            b.save_model(str(directory / f"model_{i}.txt"))
        (directory / "ranker.json").write_text(json.dumps({
            "features": list(self.features), "cfg": asdict(self.cfg), "info": self.info,
            "importances": self.importances(), "boosters": len(self.boosters)}, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> LearnedRanker:
        directory = Path(directory)
        meta = json.loads((directory / "ranker.json").read_text())
        boosters = [lgb.Booster(model_file=str(directory / f"model_{i}.txt")) for i in range(meta["boosters"])]
        cfg = {**meta["cfg"], "monotone": tuple(tuple(m) for m in meta["cfg"].get("monotone", ()))}
        return cls(boosters, tuple(meta["features"]), RankerConfig(**cfg), meta.get("info", {}))

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
               cfg: RankerConfig = RankerConfig(), extra: Sequence[tuple[np.ndarray, np.ndarray]] = (),
               extra_source: Sequence[int] | None = None) -> LearnedRanker:
    """LambdaMART on (features (n, F), labels (n,)) query groups; groups without a positive are skipped.

    `cfg.bags` boosters, each early-stopped on its own fold of the groups (seeded partitions into
    round(1 / valid_frac) folds, a new partition every round(1 / valid_frac) bags) and trained on the rest; the
    ranker's score is their mean. With few groups one
    held-out fold is noisy, and the bag uses every group for training and for stopping.

    `extra`: groups the boosters train on and none holds out or scores out of fold (augmented examples, such as
    `evaluation.ranking.navigational_targets`'): early stopping and `oof` read only `groups`. `extra_source[j]`:
    the index in `groups` that extra group j was made from; a booster that holds that group out does not train on
    its copy either (a copy shares the target's item and, often, its history), so the held-out curve and `oof`
    stay out of sample."""
    t0 = time.perf_counter()
    keep = [i for i, (x, y) in enumerate(groups) if len(x) and y.max() > 0]
    usable = [groups[i] for i in keep]
    info: dict = {"groups": len(groups), "used": len(usable), "skipped_no_positive": len(groups) - len(usable)}
    n_folds = max(2, round(1 / cfg.valid_frac))
    if len(usable) < n_folds:
        return LearnedRanker([], tuple(features), cfg, {**info, "fitted": False},
                             oof=[np.zeros(len(x)) for x, _ in groups])
    # Bag b holds out fold b % n_folds of partition b // n_folds (each partition a seeded shuffle).
    folds = [np.random.default_rng(cfg.seed + r).permutation(len(usable)) % n_folds
             for r in range(-(-cfg.bags // n_folds))]  # each (G,)
    source = list(extra_source) if extra_source is not None else [-1] * len(extra)
    if len(source) != len(extra):
        raise ValueError(f"extra_source has {len(source)} entries for {len(extra)} extra groups")
    usable_of = {g: i for i, g in enumerate(keep)}  # groups index -> usable index
    kept = [j for j, (x, y) in enumerate(extra) if len(x) and y.max() > 0]
    added = [extra[j] for j in kept]
    extra_of = np.array([usable_of.get(int(source[j]), -1) for j in kept], np.int64)  # (E,) its usable group, -1 none
    info["extra_groups"] = len(added)
    xs = [g[0].astype(np.float32) for g in [*usable, *added]]
    ys = [g[1].astype(np.float32) for g in [*usable, *added]]

    def extra_for(train_mask: np.ndarray) -> np.ndarray:
        """(E,) the extra groups a booster training on `train_mask` (over the usable groups) also trains on."""
        return (extra_of < 0) | train_mask[np.maximum(extra_of, 0)] if len(extra_of) else np.zeros(0, bool)

    def dataset(mask: np.ndarray, ref: lgb.Dataset | None = None) -> lgb.Dataset:
        idx = np.flatnonzero(mask)
        if ref is None:  # a training set: the extra groups too, except copies of the groups it holds out
            idx = np.r_[idx, len(usable) + np.flatnonzero(extra_for(mask))].astype(np.int64)
        return lgb.Dataset(np.concatenate([xs[i] for i in idx]), np.concatenate([ys[i] for i in idx]),
                           group=[len(xs[i]) for i in idx], feature_name=list(features), reference=ref,
                           free_raw_data=False)

    boosters, bags = [], []
    for b in range(cfg.bags):
        held = folds[b // n_folds] == b % n_folds
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "num_leaves": cfg.num_leaves,
            "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1,
            "lambda_l2": cfg.lambda_l2, "lambdarank_truncation_level": cfg.truncation, "seed": cfg.seed + b,
            "deterministic": True, "force_row_wise": True, "num_threads": cfg.threads, "verbosity": -1,
        }
        direction = dict((str(k), int(v)) for k, v in cfg.monotone)
        if any(f in direction for f in features):
            params["monotone_constraints"] = [direction.get(f, 0) for f in features]
        train = dataset(~held)
        curve: dict = {}
        booster = lgb.train(params, train, num_boost_round=cfg.max_rounds, valid_sets=[dataset(held, train)],
                            valid_names=["held_out"], keep_training_booster=True,
                            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False),
                                       lgb.record_evaluation(curve)])
        held_curve = np.asarray(curve["held_out"]["ndcg@10"])  # (rounds,)
        best = best_round(held_curve, cfg.min_rounds, cfg.smooth)
        boosters.append(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))  # predict == saved
        bags.append({"held_out_groups": int(held.sum()), "extra_groups": int(extra_for(~held).sum()),
                     "rounds_trained": len(held_curve), "best_iteration": best,
                     "held_out_ndcg@10": round(float(held_curve[best - 1]), 4),
                     "held_out_curve": [round(float(v), 4) for v in held_curve]})
    model = LearnedRanker(boosters, tuple(features), cfg, info)
    model.oof, in_sample = _out_of_fold(model, groups, keep, folds, n_folds)
    info |= {"fitted": True, "rows": int(sum(len(x) for x in xs)), "bags": bags,
             "held_out_ndcg@10": round(float(np.mean([b["held_out_ndcg@10"] for b in bags])), 4),
             "oof_in_sample_groups": in_sample, "seconds": round(time.perf_counter() - t0, 2)}
    return model


def _out_of_fold(model: LearnedRanker, groups: Sequence[tuple[np.ndarray, np.ndarray]], keep: list[int],
                 folds: list[np.ndarray], n_folds: int) -> tuple[list[np.ndarray], int]:
    """Each group's scores from the boosters that held it out (see `LearnedRanker.oof`), and how many usable groups
    no booster held out (bags < folds), which get the in-sample bag score."""
    sums = {i: np.zeros(len(groups[i][0])) for i in keep}
    counts = dict.fromkeys(keep, 0)
    for b, booster in enumerate(model.boosters):
        held = [keep[g] for g in np.flatnonzero(folds[b // n_folds] == b % n_folds)]
        if not held:
            continue
        # (LightGBM scores each row on its own: the thread count changes the speed, not the floats)
        pred = booster.predict(np.concatenate([groups[i][0] for i in held]).astype(np.float32),
                               num_threads=model.cfg.threads)
        for i, part in zip(held, np.split(pred, np.cumsum([len(groups[i][0]) for i in held])[:-1]), strict=True):
            sums[i] += part
            counts[i] += 1
    # The whole bag's score only where no booster held the group out (skipped groups, bags < folds): with 5 bags
    # over 5 folds that is the groups without a positive, not every row (on medium-s0 x 4, 1.85M rows x 5 boosters).
    out = [sums[i] / counts[i] if counts.get(i) else model.score(np.asarray(x, np.float32))
           for i, (x, _) in enumerate(groups)]
    return out, sum(1 for i in keep if not counts[i])


def best_round(curve: np.ndarray, min_rounds: int, smooth: int) -> int:
    """The round count (1-based) with the best moving average of a held-out curve, at least `min_rounds`.

    A few dozen held-out groups make the raw curve noisy: its maximum is often one of the first rounds."""
    n = len(curve)
    if n <= min_rounds:
        return n
    w = max(1, min(smooth, n))
    avg = np.convolve(curve, np.ones(w) / w, mode="full")[:n]  # trailing average
    avg[: w - 1] = np.cumsum(curve[: w - 1]) / np.arange(1, w)
    return int(min_rounds + np.argmax(avg[min_rounds - 1:]))
