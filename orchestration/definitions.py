"""The Dagster code location: every asset, check, resource, schedule and sensor of the platform."""

from __future__ import annotations

import os

from dagster import Definitions, load_assets_from_modules

from orchestration import checks, sensors
from orchestration.assets import data, evaluation, llm, ranking, report, seqrec, serving, text
from orchestration.resources import (
    DatasetResource,
    FeastResource,
    LLMResource,
    ProtocolResource,
    QdrantResource,
    TrainingResource,
    WorkdirResource,
)

ASSET_MODULES = [data, evaluation, seqrec, text, ranking, llm, report, serving]
all_assets = load_assets_from_modules(ASSET_MODULES)
all_checks = [checks.canonical_row_counts, checks.referential_integrity, checks.point_in_time_safety,
              checks.training_before_targets]


def build_resources(data_dir: str | None = None, fmt: str = "canonical", workdir: str | None = None,
                    training: dict | None = None, protocol: str | None = None, llm: dict | None = None) -> dict:
    """Resources for one dataset and workdir (defaults from FASHIONREC_* environment variables)."""
    workdir = workdir or os.environ.get("FASHIONREC_WORKDIR", "work")
    dataset = DatasetResource(format=os.environ.get("FASHIONREC_FORMAT", fmt))
    data_dir = data_dir or os.environ.get("FASHIONREC_DATA")
    if data_dir:
        dataset = DatasetResource(data_dir=str(data_dir), format=dataset.format)
    return {
        "dataset": dataset,
        "workdir": WorkdirResource(workdir=workdir, inbox=os.environ.get("FASHIONREC_INBOX")),
        "feast": FeastResource(workdir=workdir),
        "training": TrainingResource(**(training or {})),
        "llm": LLMResource(**(llm or {})),
        "protocol": ProtocolResource(protocol=protocol or os.environ.get("FASHIONREC_PROTOCOL", "temporal")),
        "qdrant": QdrantResource(workdir=workdir, url=os.environ.get("FASHIONREC_QDRANT_URL")),
    }


def launchpad_resources() -> dict:
    """`build_resources()` with the run-level knobs (training, protocol, LLM budget) set at launch: the UI's
    launchpad shows their fields under `resources:`, with the same classes and defaults as `fashionrec run`'s flags."""
    fixed = build_resources()
    knobs = {"training": TrainingResource, "protocol": ProtocolResource, "llm": LLMResource}
    return fixed | {name: cls.configure_at_launch(**fixed[name].model_dump(exclude_unset=True))
                    for name, cls in knobs.items()}


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[sensors.retrain_job, sensors.incremental_update],
    schedules=[sensors.nightly_retrain],
    sensors=[sensors.new_catalog_items, sensors.inbox_batches],
    resources=launchpad_resources(),
)
