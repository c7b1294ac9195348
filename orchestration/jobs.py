"""The main job under Dagster's multiprocess executor (`fashionrec run --executor multiprocess`).

`materialize` runs every step in the calling process, one after another. The multiprocess executor runs each step
in a process of its own, up to `max_concurrent` at once, so that independent branches (the ID models, the title
model, the baselines' evaluations) overlap. Each step's process re-imports the job (`reconstructable`): the run's
dataset and workdir reach it through `FASHIONREC_*` (the settings every resource reads), the run-level knobs
(training, protocol, LLM budget) through the run config, as the UI's launchpad sets them.

Two limits keep the steps out of each other's way:
- the steps that write an embedded store (Qdrant's collections, Feast's online store) carry a `fashionrec/store`
  tag, and at most one of each store's runs at a time;
- each step's torch and OpenMP use `cores // max_concurrent` threads, so that two steps on two cores do not
  oversubscribe them (two OpenMP programs spinning on the same cores slow each other several times over).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

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
from dagster._core.execution.job_execution_result import JobExecutionResult

RUN_JOB = "fashionrec_run"
EXECUTORS = ("in_process", "multiprocess")
STORE_TAG = "fashionrec/store"  # op tag of the steps that write an embedded store: at most one per store at a time
STORES = ("qdrant", "feast")


def run_job() -> JobDefinition:
    """Every asset and check with the launchpad's resources, under the multiprocess executor (module level, so
    that each step's process can rebuild it)."""
    from orchestration.definitions import all_assets, all_checks, launchpad_resources

    defs = Definitions(assets=all_assets, asset_checks=all_checks, resources=launchpad_resources(),
                       jobs=[define_asset_job(RUN_JOB, executor_def=multiprocess_executor)])
    return defs.resolve_job_def(RUN_JOB)


def step_threads(max_concurrent: int, cores: int | None = None) -> int:
    """Threads per step so that `max_concurrent` steps fill the cores without oversubscribing them."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, max_concurrent))


def executor_config(max_concurrent: int) -> dict:
    """The multiprocess executor's run config: `max_concurrent` steps, one writer per embedded store. Steps fork
    from a server that has imported the code location once (torch, Feast, Dagster and every asset), rather than
    each spawning a fresh interpreter that imports it all again (about 10 s a step on this machine)."""
    return {"config": {"max_concurrent": max_concurrent,
                       "tag_concurrency_limits": [{"key": STORE_TAG, "value": s, "limit": 1} for s in STORES],
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


def execute_multiprocess(instance: DagsterInstance, keys: Iterable[AssetKey], *, knobs: Mapping[str, dict],
                         settings_env: Mapping[str, str], max_concurrent: int = 2, log_level: str = "INFO"
                         ) -> JobExecutionResult:
    """Materialize `keys` (and their checks) with `run_job` on the multiprocess executor. `knobs`: the run-level
    resources' config (training, protocol, llm); `settings_env`: the `FASHIONREC_*` values of this run's dataset
    and workdir."""
    threads = str(step_threads(max_concurrent))
    env = {**settings_env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    run_config = {"execution": executor_config(max_concurrent),
                  "resources": {name: {"config": dict(cfg)} for name, cfg in knobs.items()},
                  "loggers": {"console": {"config": {"log_level": log_level}}}}
    with step_environment(env):
        return execute_job(reconstructable(run_job), instance, run_config=run_config, asset_selection=list(keys),
                           raise_on_error=False)
