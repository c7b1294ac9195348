"""How the offline graph grows with data: each asset's wall time and peak memory on two datasets, one run each.

Runs `fashionrec run --no-llm --models core-trm [--executor E]` on each dataset (default: small-s0 and medium-s0,
about 5x the interactions) in a subprocess, samples the memory of its process tree every 0.2 s from /proc, and
reads each asset's step start, end and process from the workdir's Dagster instance. Memory is PSS (shared pages
split among the processes that map them). A step's peak is its own process's: the run's under `in_process`, so it
includes what earlier steps left; the step's alone under `multiprocess`, so the two executors' per-step peaks do
not compare. The whole run's peak is the tree's sum. Prints, per asset, the time and peak memory on both sets and
their ratios next to the ratio of interactions; an asset whose time grows more than 1.25x faster than the data is flagged.
The LLM stage is left out: its cost is set by its sample sizes and time budget, not by the data. Each run's
figures are kept in `<workdir>/k<K>.json`, so a stopped benchmark resumes where it was and a table can be printed
again without running anything.

    python benchmarks/scale.py [--small DIR] [--large DIR] [--workdir /tmp/scale]
    python benchmarks/scale.py --tile 1,2,4 [--base ../shared/data/synthetic/medium-s0]  # medium-s0 x K
    python benchmarks/scale.py --tile 1 --executor multiprocess  # the same graph, steps in parallel processes
    python benchmarks/scale.py --tile 1,4 --sampled-negatives 1024  # the ID models with a sampled softmax
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "synthetic"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mb(pid: int) -> float:
    """The process's proportional set size (MB): its resident pages, each shared page split among the processes
    that map it, so that the step processes forked from one server (sharing its imports copy-on-write) sum to the
    tree's real footprint; for a lone process it is its RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return out


def run_one(data: Path, workdir: Path, executor: str = "in_process", extra: Sequence[str] = ()
            ) -> tuple[pd.DataFrame, int, float, float]:
    """Per-asset seconds and peak RSS (MB) of one full run; the dataset's interactions; the run's wall time; the
    process tree's peak RSS (MB). The result is also written beside the workdir (`<workdir>.json`), and read from
    there instead of running again when it exists and was made by the same command."""
    import json
    import shutil

    saved = workdir.with_suffix(".json")
    key = {"data": str(data), "executor": executor, "extra": list(extra)}
    if saved.exists():
        got = json.loads(saved.read_text())
        if got.get("key") == key:
            return pd.DataFrame(got["rows"]), got["interactions"], got["wall"], got["tree_peak"]
    if workdir.exists():
        shutil.rmtree(workdir)
    samples: list[tuple[float, int, float]] = []  # (time, pid, MB)
    cmd = [sys.executable, "-m", "orchestration.cli", "run", "--data", str(data), "--workdir", str(workdir),
           "--models", "core-trm", "--no-llm", "--log-level", "WARNING", "--executor", executor, *extra]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = time.time()
            samples.extend((now, p, mb) for p in _tree(proc.pid) if (mb := _rss_mb(p)) > 0)  # 0: it just ended
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"fashionrec run on {data} failed with exit code {rc}")
    rss = pd.DataFrame(samples, columns=["t", "pid", "mb"])
    tree_peak = float(rss.groupby("t")["mb"].sum().max()) if len(rss) else float("nan")
    rows = []
    from dagster import DagsterEventType

    from orchestration.instance import workdir_instance

    with workdir_instance(workdir) as instance:
        run = instance.get_runs(limit=1)[0]
        starts: dict[str, float] = {}
        pids: dict[str, int] = {}
        for e in instance.all_logs(run.run_id):
            if e.dagster_event is None or e.step_key is None:
                continue
            kind = e.dagster_event.event_type
            if kind == DagsterEventType.STEP_START:
                starts[e.step_key] = e.timestamp
                pids[e.step_key] = e.dagster_event.pid or proc.pid
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and e.step_key in starts:
                s, t = starts[e.step_key], e.timestamp
                window = rss[(rss["t"] >= s) & (rss["t"] <= t + 0.2) & (rss["pid"] == pids[e.step_key])]
                rows.append({"asset": e.step_key, "seconds": t - s,
                             "peak_mb": float(window["mb"].max()) if len(window) else float("nan")})
    events = pd.read_parquet(data / "events.parquet", columns=["action"])
    interactions = int(events["action"].isin(["click", "purchase"]).sum())
    saved.write_text(json.dumps({"key": key, "rows": rows, "interactions": interactions, "wall": wall,
                                 "tree_peak": tree_peak}))
    return pd.DataFrame(rows), interactions, wall, tree_peak


def growth_table(runs: dict[int, tuple[pd.DataFrame, int, float, float]]) -> str:
    """Per asset: seconds and peak MB at each tile count, and the largest's ratios to the smallest's, flagged when
    the time grows more than 1.25x faster than the data (and takes over 5 s)."""
    ks = sorted(runs)
    lo, hi = ks[0], ks[-1]
    data_x = runs[hi][1] / runs[lo][1]
    df = None
    for k in ks:
        part = runs[k][0].rename(columns={"seconds": f"s K={k}", "peak_mb": f"MB K={k}"})
        df = part if df is None else df.merge(part, on="asset", how="outer")
    df["time x"] = df[f"s K={hi}"] / df[f"s K={lo}"]
    df["memory x"] = df[f"MB K={hi}"] / df[f"MB K={lo}"]
    df = df.sort_values(f"s K={hi}", ascending=False)
    head = ["asset", *[f"s K={k}" for k in ks], "time x", *[f"MB K={k}" for k in ks], "memory x", "faster than data"]
    lines = [f"interactions x{data_x:.2f} from K={lo} to K={hi}; whole run "
             + ", ".join(f"K={k} {runs[k][2]:.0f} s, peak {runs[k][3] / 1024:.1f} GB" for k in ks), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.to_dict("records"):
        flag = "yes" if r["time x"] > 1.25 * data_x and r[f"s K={hi}"] > 5 else ""
        lines.append("| " + " | ".join([r["asset"], *[f"{r[f's K={k}']:.1f}" for k in ks], f"{r['time x']:.2f}",
                                        *[f"{r[f'MB K={k}']:.0f}" for k in ks], f"{r['memory x']:.2f}", flag]) + " |")
    return "\n".join(lines)


def main(small: Annotated[Path, typer.Option(help="The smaller dataset")] = DATA / "small-s0",
         large: Annotated[Path, typer.Option(help="The larger dataset")] = DATA / "medium-s0",
         tile: Annotated[str | None, typer.Option(help="Instead: --base tiled K times for each K here, e.g. 1,2,4 "
                                                      "(feature_repo.subsets.tile_dataset)")] = None,
         base: Annotated[Path, typer.Option(help="The dataset --tile repeats")] = DATA / "medium-s0",
         workdir: Annotated[Path, typer.Option(help="Scratch folder")] = Path("/tmp/fashionrec-scale"),
         executor: Annotated[str, typer.Option(help="in_process | multiprocess (fashionrec run --executor)")
                             ] = "in_process",
         sampled_negatives: Annotated[str, typer.Option(help="fashionrec run --sampled-negatives: auto (the run's "
                                                             "default), 0 (the full softmax) or N")] = "auto") -> None:
    extra = [] if sampled_negatives == "auto" else ["--sampled-negatives", sampled_negatives]
    if tile:
        from feature_repo.subsets import tile_dataset

        runs = {}
        for k in sorted({int(x) for x in tile.split(",")}):
            data = base if k == 1 else workdir / f"data-k{k}"
            if k > 1 and not (data / "subset.json").exists():
                tile_dataset(base, data, k)
            runs[k] = run_one(data, workdir / f"k{k}", executor, extra)
            print(f"K={k}: {runs[k][2]:.0f} s", flush=True)
        print("\n" + growth_table(runs))
        return
    print("\n" + growth_table({1: run_one(small, workdir / "small", executor, extra),
                               2: run_one(large, workdir / "large", executor, extra)})
          .replace("K=1", small.name).replace("K=2", large.name))


if __name__ == "__main__":
    typer.run(main)
