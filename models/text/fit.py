"""One period's title model, fitted from the workdir's files: what the `title_model` asset runs for each fit (and
`encode_titles`, what `item_title_embeddings` runs for each).

The two fits (before the validation targets, before the test targets) are independent, and each trains on one
thread (`TitleTrainConfig.num_threads`, seeded and deterministic), so the asset runs them in two processes at once
where the step has two cores (`orchestration.parallel`): the same weights, in about half the time. Everything a fit
needs travels as paths and settings, and each process reads the tables itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feature_repo.schema import CanonicalTables
from feature_repo.splits import read_splits, training_events, training_user_mask
from models.text.train import (
    TitleTrainConfig,
    TrainResult,
    build_pairs,
    load_title_model,
    save_title_model,
    train_title_model,
)


@dataclass(frozen=True)
class TitleFit:
    """One fit to run: its period, where the tables are and where the model goes, and the training settings."""

    period: str  # "val" or "test"
    canonical: Path
    splits: Path
    out: Path
    cfg: TitleTrainConfig
    user_share: float = 1.0
    seed: int = 0
    include_clicks: bool = False


def fit_title_period(job: TitleFit) -> tuple[TrainResult, Path]:
    """Build the period's (query, purchased item) pairs from the events before its cut (the training users'), train
    the title model on them and save it to `job.out`; returns what training did and the saved directory."""
    tables = CanonicalTables.read(job.canonical)
    events = training_events(read_splits(job.splits), tables.events, job.period)  # type: ignore[arg-type]
    events = events[training_user_mask(events["user_id"], job.user_share, job.seed)]
    pairs = build_pairs(events, tables.search_results, include_clicks=job.include_clicks)
    model, result = train_title_model(pairs, tables.items, job.cfg)
    return result, save_title_model(model, job.out, job.cfg, result)


def encode_titles(job: tuple[Path, list[str]]) -> np.ndarray:
    """The title model saved at `job[0]` encodes the texts `job[1]`: (n, D) unit rows, as `embed_catalog` does (the
    `item_title_embeddings` asset runs one per fit, each in a process of its own where the step has the cores)."""
    model_dir, texts = job
    return load_title_model(model_dir).encode(texts, batch_size=512)
