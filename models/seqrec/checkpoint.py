"""Checkpoints that carry the model class, its config and the vocab, so loading rebuilds the same model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models.seqrec.base import SequentialRecommender
from models.seqrec.registry import MODEL_CLASSES
from models.seqrec.train import TrainConfig
from models.seqrec.vocab import ItemVocab


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode, on `map_location`), its vocab and train config."""

    model: SequentialRecommender
    vocab: ItemVocab
    train_config: TrainConfig | None


def save_checkpoint(
    path: str | Path, model: SequentialRecommender, vocab: ItemVocab, cfg: TrainConfig | None = None
) -> None:
    """Write class name, model config, vocab, train config and weights to `path`."""
    if len(vocab) != model.n_items:
        raise ValueError(f"vocab has {len(vocab)} entries but the model has {model.n_items} items")
    blob = {
        "model_class": type(model).__name__,
        "config": asdict(model.config),
        "vocab": vocab.to_list(),
        "train_config": asdict(cfg) if cfg is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(blob, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the exact model saved by `save_checkpoint`."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    cls = MODEL_CLASSES[blob["model_class"]]
    model = cls(cls.config_class(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.to(map_location).eval()
    cfg = blob["train_config"]
    return Checkpoint(
        model=model,
        vocab=ItemVocab.from_list(blob["vocab"]),
        train_config=TrainConfig(**cfg) if cfg is not None else None,
    )
