"""Where a request's time goes: the service's request path in process, under a sampling profiler (pyinstrument).

On a workdir `fashionrec run` wrote (medium-s0 for the serving issue), it loads `RecommendationService` as
`fashionrec serve` does (warm-up included), then answers `--requests` real users one at a time (the default ranked
path, k = 10) with pyinstrument sampling every millisecond. It prints the latency percentiles, the stage times the
answers report, and the functions that hold the most time (own time, and time with what they call), and writes the
flame graph as HTML (`--html`) and as a speedscope JSON (`--speedscope`, for https://speedscope.app, offline too).

    python benchmarks/serving_profile.py --workdir /tmp/wmed [--requests 200] [--html /tmp/profile.html]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer


def _users(root: Path, n: int, seed: int) -> list[str]:
    ev = pd.read_parquet(root / "canonical" / "events.parquet", columns=["user_id", "action"])
    acted = sorted(ev.loc[ev["action"].isin(["click", "purchase"]), "user_id"].unique())
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.choice(acted, size=min(n, len(acted)), replace=False)]


def _frames(session, top: int) -> list[tuple[str, float, float]]:  # noqa: ANN001 - pyinstrument.Session
    """(function at file:line, own seconds, total seconds) over the whole profile, by own time."""
    own: dict[str, float] = {}
    total: dict[str, float] = {}

    def walk(frame, stack: frozenset) -> None:  # noqa: ANN001
        key = f"{frame.function} ({Path(frame.file_path or '?').name}:{frame.line_no})"
        own[key] = own.get(key, 0.0) + frame.total_self_time  # its "[self]" leaves: time in no callee
        if key not in stack:  # recursion counts once
            total[key] = total.get(key, 0.0) + frame.time
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, stack | {key})

    root = session.root_frame()
    if root is not None:
        walk(root, frozenset())
    return sorted(((k, own[k], total.get(k, 0.0)) for k in own), key=lambda r: -r[1])[:top]


def main(workdir: Annotated[Path, typer.Option(help="A workdir `fashionrec run` wrote")],
         requests: Annotated[int, typer.Option(help="Users answered under the profiler")] = 200,
         k: int = 10,
         top: Annotated[int, typer.Option(help="Functions listed")] = 25,
         html: Annotated[Path | None, typer.Option(help="Write the flame graph here (HTML)")] = None,
         speedscope: Annotated[Path | None, typer.Option(help="Write a speedscope JSON here")] = None,
         seed: int = 0) -> None:
    from pyinstrument import Profiler
    from pyinstrument.renderers import HTMLRenderer, SpeedscopeRenderer

    from serving.config import Settings
    from serving.schemas import RecommendationRequest
    from serving.service import RecommendationService

    root = workdir.resolve()
    t = time.perf_counter()
    service = RecommendationService.load(Settings(workdir=root, llm_enabled=False, log_requests=False))
    typer.echo(f"loaded and warmed in {time.perf_counter() - t:.1f} s (bundle {service.bundle.version})")
    users = _users(root, requests, seed)
    profiler = Profiler(interval=0.001)
    ms, stages = [], []
    profiler.start()
    for u in users:
        t = time.perf_counter()
        out = service.recommend(RecommendationRequest(user_id=u, k=k), "profile")
        ms.append((time.perf_counter() - t) * 1e3)
        stages.append(out.timings_ms)
    profiler.stop()
    service.close()
    a = np.asarray(ms)
    typer.echo(f"\n{len(a)} requests, k={k}: p50 {np.percentile(a, 50):.1f} ms, p95 {np.percentile(a, 95):.1f} ms, "
               f"p99 {np.percentile(a, 99):.1f} ms, mean {a.mean():.1f} ms (under the profiler)\n")
    keys = sorted({key for s in stages for key in s})
    typer.echo("| stage | mean ms | p50 ms |\n|---|---|---|")
    for key in keys:
        v = [s.get(key, 0.0) for s in stages]
        typer.echo(f"| {key} | {np.mean(v):.2f} | {np.median(v):.2f} |")
    total = sum(ms) / 1e3
    typer.echo("\n| function | own s | own % | with callees s | with callees % |\n|---|---|---|---|---|")
    for name, own, incl in _frames(profiler.last_session, top):
        typer.echo(f"| `{name}` | {own:.2f} | {100 * own / total:.1f} | {incl:.2f} | {100 * incl / total:.1f} |")
    if html is not None:
        html.write_text(profiler.output(HTMLRenderer()))
        typer.echo(f"\nflame graph: {html}")
    if speedscope is not None:
        speedscope.write_text(profiler.output(SpeedscopeRenderer()))
        typer.echo(f"speedscope profile: {speedscope}")


if __name__ == "__main__":
    typer.run(main)
