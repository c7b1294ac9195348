"""How the offline graph grows with data: each asset's wall time and peak memory on two datasets, one run each.

Runs `fashionrec run --no-llm --models core-trm` on each dataset (default: small-s0 and medium-s0, about 5x the
interactions) in a subprocess, samples its resident memory every 0.2 s from /proc, and reads each asset's step start
and end from the workdir's Dagster instance. Prints, per asset, the time and peak RSS on both sets and their ratios
next to the ratio of interactions; an asset whose time grows more than 1.25x faster than the data is flagged.
The LLM stage is left out: its cost is set by its sample sizes and time budget, not by the data.

    python benchmarks/scale.py [--small DIR] [--large DIR] [--workdir /tmp/scale]
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "synthetic"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def run_one(data: Path, workdir: Path) -> tuple[pd.DataFrame, int, float]:
    """Per-asset seconds and peak RSS (MB) of one full run; the dataset's interactions; the run's wall time."""
    import shutil

    if workdir.exists():
        shutil.rmtree(workdir)
    samples: list[tuple[float, float]] = []
    cmd = [sys.executable, "-m", "orchestration.cli", "run", "--data", str(data), "--workdir", str(workdir),
           "--models", "core-trm", "--no-llm", "--log-level", "WARNING"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), _rss_mb(proc.pid)))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"fashionrec run on {data} failed with exit code {rc}")
    rss = pd.DataFrame(samples, columns=["t", "mb"])
    rows = []
    from dagster import DagsterEventType

    from orchestration.instance import workdir_instance

    with workdir_instance(workdir) as instance:
        run = instance.get_runs(limit=1)[0]
        starts: dict[str, float] = {}
        for e in instance.all_logs(run.run_id):
            if e.dagster_event is None or e.step_key is None:
                continue
            kind = e.dagster_event.event_type
            if kind == DagsterEventType.STEP_START:
                starts[e.step_key] = e.timestamp
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and e.step_key in starts:
                s, t = starts[e.step_key], e.timestamp
                window = rss[(rss["t"] >= s) & (rss["t"] <= t + 0.2)]
                rows.append({"asset": e.step_key, "seconds": t - s,
                             "peak_mb": float(window["mb"].max()) if len(window) else float("nan")})
    events = pd.read_parquet(data / "events.parquet", columns=["action"])
    return pd.DataFrame(rows), int(events["action"].isin(["click", "purchase"]).sum()), wall


def main(small: Annotated[Path, typer.Option(help="The smaller dataset")] = DATA / "small-s0",
         large: Annotated[Path, typer.Option(help="The larger dataset")] = DATA / "medium-s0",
         workdir: Annotated[Path, typer.Option(help="Scratch folder")] = Path("/tmp/fashionrec-scale")) -> None:
    a, na, wa = run_one(small, workdir / "small")
    b, nb, wb = run_one(large, workdir / "large")
    ratio = nb / na
    df = a.merge(b, on="asset", suffixes=("_small", "_large"))
    df["time_ratio"] = df["seconds_large"] / df["seconds_small"]
    df["mem_ratio"] = df["peak_mb_large"] / df["peak_mb_small"]
    df = df.sort_values("seconds_large", ascending=False)
    print(f"\ninteractions: {na:,} ({small.name}) -> {nb:,} ({large.name}), {ratio:.2f}x; "
          f"whole run {wa:.0f} s -> {wb:.0f} s ({wb / wa:.2f}x)\n")
    print("| asset | s small | s large | time x | peak MB small | peak MB large | memory x | grows faster than data |")
    print("|---|---|---|---|---|---|---|---|")
    for r in df.itertuples(index=False):
        flag = "yes" if r.time_ratio > 1.25 * ratio and r.seconds_large > 5 else ""
        print(f"| {r.asset} | {r.seconds_small:.1f} | {r.seconds_large:.1f} | {r.time_ratio:.2f} | "
              f"{r.peak_mb_small:.0f} | {r.peak_mb_large:.0f} | {r.mem_ratio:.2f} | {flag} |")


if __name__ == "__main__":
    typer.run(main)
