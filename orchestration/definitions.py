"""The Dagster code location: every asset, check, resource, schedule and sensor of the platform."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules, multiprocess_executor

from orchestration import checks, sensors
from orchestration.assets import data, evaluation, llm, ranking, report, seqrec, serving, text
from orchestration.jobs import STORE_LIMITS
from orchestration.resources import (
    DatasetResource,
    FeastResource,
    LLMResource,
    ProtocolResource,
    QdrantResource,
    TrainingResource,
    WorkdirResource,
)
from serving.config import Settings

ASSET_MODULES = [data, evaluation, seqrec, text, ranking, llm, report, serving]
all_assets = load_assets_from_modules(ASSET_MODULES)
all_checks = [checks.canonical_row_counts, checks.referential_integrity, checks.point_in_time_safety,
              checks.training_before_targets, checks.fits_before_their_targets]


def build_resources(data_dir: str | None = None, fmt: str | None = None, workdir: str | None = None,
                    training: dict | None = None, protocol: str | None = None, llm: dict | None = None,
                    settings: Settings | None = None, refit_every_days: float | None = None,
                    max_test_targets: int | None = None) -> dict:
    """Resources for one dataset and workdir; what is not given comes from the settings (`FASHIONREC_*`)."""
    settings = settings or Settings()
    workdir = workdir or str(settings.workdir)
    data_dir = data_dir or (str(settings.data) if settings.data else None)
    dataset = DatasetResource(format=fmt or settings.format)
    if data_dir:
        dataset = DatasetResource(data_dir=str(data_dir), format=dataset.format)
    return {
        "dataset": dataset,
        "workdir": WorkdirResource(workdir=workdir, inbox=str(settings.inbox) if settings.inbox else None),
        "feast": FeastResource(workdir=workdir, online_store=settings.online_store,
                               offline_store=settings.offline_store),
        "training": TrainingResource(**(training or {})),
        "llm": LLMResource(**(llm or {})),
        "protocol": ProtocolResource(protocol=protocol or settings.protocol,
                                     **({} if refit_every_days is None else {"refit_every_days": refit_every_days}),
                                     **({} if max_test_targets is None else {"max_test_targets": max_test_targets})),
        "qdrant": QdrantResource(workdir=workdir, url=settings.qdrant_url, api_key=settings.api_key,
                                 id_collection=settings.id_collection, title_collection=settings.title_collection,
                                 memory_collection=settings.memory_collection),
    }


def launchpad_resources() -> dict:
    """`build_resources()` with the run-level knobs (training, protocol, LLM budget) set at launch: the UI's
    launchpad shows their fields under `resources:`, with the same classes and defaults as `fashionrec run`'s flags."""
    fixed = build_resources()
    knobs = {"training": TrainingResource, "protocol": ProtocolResource, "llm": LLMResource}
    return fixed | {name: cls.configure_at_launch(**fixed[name].model_dump(exclude_unset=True))
                    for name, cls in knobs.items()}


defs = Definitions(
    # The UI's and the schedule's runs: each step in a process of its own, two at a time, one writer per embedded
    # store (Dagster's default executor has no such limit).
    executor=multiprocess_executor.configured({"max_concurrent": 2, "tag_concurrency_limits": STORE_LIMITS}),
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[sensors.retrain_job, sensors.incremental_update],
    schedules=[sensors.nightly_retrain],
    sensors=[sensors.new_catalog_items, sensors.inbox_batches],
    resources=launchpad_resources(),
)
