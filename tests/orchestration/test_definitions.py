"""The code location the UI loads: jobs, sensors, and the run-level knobs editable in the launchpad."""

import inspect

from orchestration.cli import run
from orchestration.definitions import defs


def _launchpad_defaults(job_name: str | None = None) -> dict[str, dict]:
    job = defs.resolve_job_def(job_name) if job_name else defs.resolve_implicit_global_asset_job_def()
    res = job.run_config_schema.config_type.fields["resources"].config_type.fields
    return {n: {k: v.default_value for k, v in res[n].config_type.fields["config"].config_type.fields.items()
                if v.default_provided} for n in ("training", "protocol", "llm")}


def test_launchpad_knobs_match_the_cli_defaults() -> None:
    knobs = _launchpad_defaults()
    cli = {name: p.default for name, p in inspect.signature(run).parameters.items()}
    assert knobs["training"]["epochs"] == cli["epochs"] == 10
    assert knobs["training"]["device"] == cli["device"]
    assert knobs["protocol"]["protocol"] == cli["protocol"] == "temporal"
    assert knobs["llm"]["model"] == cli["llm_model"]
    assert knobs["llm"]["train_prompts"] == cli["llm_prompts"]
    assert knobs["llm"]["eval_targets"] == cli["llm_targets"]
    assert knobs["llm"]["max_train_seconds"] == cli["llm_train_seconds"]
    assert knobs["llm"]["engine"] == cli["llm_engine"] == "auto"


def test_a_launch_overrides_a_knob_for_one_run() -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    config = {"resources": {"training": {"config": {"epochs": 2}}, "protocol": {"config": {"protocol": "loo"}}}}
    assert job.run_config_schema.config_type.fields["resources"] is not None
    from dagster._config import validate_config

    assert validate_config(job.run_config_schema.config_type, config).success
    bad = {"resources": {"training": {"config": {"epochs": "many"}}}}
    assert not validate_config(job.run_config_schema.config_type, bad).success


def test_jobs_and_sensors_are_registered() -> None:
    assert {"retrain_all", "incremental_update"} <= {j.name for j in defs.resolve_all_job_defs()}
    assert {"new_catalog_items", "inbox_batches"} <= {s.name for s in defs.sensors}
