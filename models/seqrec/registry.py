"""Registry of sequential recommenders by name, and the one place that builds them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from models.seqrec.base import SequentialRecommender
from models.seqrec.bert4rec import BERT4Rec
from models.seqrec.core import CORE
from models.seqrec.gru4rec import GRU4Rec
from models.seqrec.nextitnet import NextItNet
from models.seqrec.sasrec import SASRec


@dataclass(frozen=True)
class ModelSpec:
    """A model class plus the config fields that define the named variant."""

    model: type[SequentialRecommender]
    fixed: Mapping[str, Any] = field(default_factory=dict)


ID_MODEL = "core-trm"  # the paper's ID-embedding model (CORE): its item table indexes the ID list
MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "core-ave": ModelSpec(CORE, {"variant": "ave"}),
        "core-trm": ModelSpec(CORE, {"variant": "trm"}),
        "sasrec-ce": ModelSpec(SASRec, {"loss_type": "ce"}),
        "sasrec-bce": ModelSpec(SASRec, {"loss_type": "bce"}),
        "gru4rec": ModelSpec(GRU4Rec),
        "bert4rec": ModelSpec(BERT4Rec),
        "nextitnet": ModelSpec(NextItNet),
    }
)

# class name -> class, for rebuilding from checkpoints
MODEL_CLASSES: Mapping[str, type[SequentialRecommender]] = MappingProxyType(
    {spec.model.__name__: spec.model for spec in MODELS.values()}
)


def build_model(name: str, n_items: int, **overrides: Any) -> SequentialRecommender:
    """Build a registered model; `overrides` set config fields other than the variant's fixed ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    spec = MODELS[name]
    clash = {k for k, v in overrides.items() if k in spec.fixed and spec.fixed[k] != v}
    if clash:
        raise ValueError(f"{name!r} fixes {sorted(clash)}; pick another registered name instead")
    config = spec.model.config_class(n_items=n_items, **{**overrides, **spec.fixed})
    return spec.model(config)
