"""The main job under Dagster's multiprocess executor (`fashionrec run --executor multiprocess`).

`materialize` runs every step in the calling process, one after another. The multiprocess executor runs each step
in a process of its own, up to `max_concurrent` at once, so that independent branches (the ID models, the title
model, the baselines' evaluations) overlap. Each step's process re-imports the job (`reconstructable`). Every
resource of `run_job` is configured at launch, and a run passes the whole of its own resources in its run config
(`resources_config`): a step reads the run's dataset and workdir, never the environment its process was forked
with.

Two limits keep the steps out of each other's way:
- the steps that write an embedded store (Qdrant's collections, Feast's online store) carry a `fashionrec/store`
  tag, and at most one of each store's runs at a time (also in the UI's runs: `STORE_LIMITS` configures the code
  location's default executor);
- each step's torch and OpenMP use `cores // max_concurrent` threads (`OMP_NUM_THREADS`, unless set already), so
  that two steps on two cores do not oversubscribe them (two OpenMP programs spinning on the same cores slow each
  other several times over). Steps fork from a server started on the first multiprocess run of an interpreter, with
  that run's thread setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    JobDefinition,
    define_asset_job,
    execute_job,
    multiprocess_executor,
    reconstructable,
)

if TYPE_CHECKING:
    from dagster._core.execution.job_execution_result import JobExecutionResult

RUN_JOB = "fashionrec_run"
EXECUTORS = ("in_process", "multiprocess")
STORE_TAG = "fashionrec/store"  # op tag of the steps that write an embedded store: at most one per store at a time
STORES = ("qdrant", "feast")
STORE_LIMITS = [{"key": STORE_TAG, "value": s, "limit": 1} for s in STORES]


def run_job() -> JobDefinition:
    """Every asset and check, every resource configured at launch (defaults from the settings), under the
    multiprocess executor (module level, so that each step's process can rebuild it)."""
    from orchestration.definitions import all_assets, all_checks, build_resources

    resources = {name: type(r).configure_at_launch(**r.model_dump()) for name, r in build_resources().items()}
    defs = Definitions(assets=all_assets, asset_checks=all_checks, resources=resources,
                       jobs=[define_asset_job(RUN_JOB, executor_def=multiprocess_executor)])
    return defs.resolve_job_def(RUN_JOB)


def resources_config(resources: Mapping[str, Any]) -> dict:
    """The run config of these (ConfigurableResource) resources: every field, so that nothing falls back on the
    step process's own settings."""
    return {name: {"config": r.model_dump()} for name, r in resources.items()}


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def step_threads(max_concurrent: int, n_cores: int | None = None) -> int:
    """Threads per step so that `max_concurrent` steps fill the cores without oversubscribing them."""
    return max(1, (n_cores or cores()) // max(1, max_concurrent))


def executor_config(max_concurrent: int) -> dict:
    """The multiprocess executor's run config: `max_concurrent` steps, one writer per embedded store. Steps fork
    from a server that has imported the code location once (torch, Feast, Dagster and every asset), rather than
    each spawning a fresh interpreter that imports it all again (about 10 s a step on this machine)."""
    return {"config": {"max_concurrent": max_concurrent, "tag_concurrency_limits": STORE_LIMITS,
                       "start_method": {"forkserver": {"preload_modules": ["orchestration.jobs",
                                                                           "orchestration.definitions"]}}}}


@contextmanager
def step_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set in this process (the step processes inherit it) for the duration; the old values restored."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_multiprocess(instance: DagsterInstance, keys: Iterable[AssetKey], resources: Mapping[str, Any], *,
                         max_concurrent: int = 2, log_level: str = "INFO") -> JobExecutionResult:
    """Materialize `keys` (and their checks) with `run_job` on the multiprocess executor, with this run's
    `resources` (the ones `materialize` would be given)."""
    threads = str(step_threads(max_concurrent))
    env = {k: os.environ.get(k, threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run_config = {"execution": executor_config(max_concurrent), "resources": resources_config(resources),
                  "loggers": {"console": {"config": {"log_level": log_level}}}}
    with step_environment(env):
        return execute_job(reconstructable(run_job), instance, run_config=run_config, asset_selection=list(keys),
                           raise_on_error=False)
