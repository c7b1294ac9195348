"""One Dagster instance per workdir, shared by `fashionrec run` and `fashionrec ui`.

Runs, materializations, asset-check results and their metadata are recorded under `<workdir>/dagster_home` (SQLite
storage), so the UI opened on a workdir shows what the command line did there. Telemetry and the first-visit
newsletter prompt are off in the instance's `dagster.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance

DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def dagster_home(workdir: Path) -> Path:
    """`<workdir>/dagster_home` with its `dagster.yaml` (written once; a user's edits are kept)."""
    home = Path(workdir).resolve() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def workdir_instance(workdir: Path) -> DagsterInstance:
    """The persistent instance of a workdir (close it after use, or use it as a context manager)."""
    return DagsterInstance.from_config(str(dagster_home(workdir)))
