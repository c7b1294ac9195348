"""Independent work inside one step, in processes of its own, when the step has the cores for it.

The in-process executor runs one step at a time, and a step whose work is single-threaded by design (the title
model trains on one thread so that it is deterministic) leaves the machine's other core idle. `parallel_map` runs
such independent pieces (the title model's two fits, each period's catalog embedding) in spawned processes, at
most `step_cores()` at once: the step's share of the machine (`OMP_NUM_THREADS` under the multiprocess executor,
which sets it to cores / concurrent steps; the process's cores otherwise). With one core, or one piece, everything
runs here, in order. Results are the same either way: each piece is seeded and single-threaded.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from orchestration.jobs import cores

T = TypeVar("T")
R = TypeVar("R")


def step_cores() -> int:
    """The cores this step may use: `OMP_NUM_THREADS` when set (the multiprocess executor's share), else all."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return cores()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """`[fn(x) for x in items]`, in up to `workers` (default `step_cores()`) spawned processes when that is more
    than one; `fn` must be importable (a module-level function) and its arguments and results picklable."""
    workers = step_cores() if workers is None else workers
    n = min(workers, len(items))
    if n <= 1:
        return [fn(x) for x in items]
    # spawn, not fork: the step's process has torch's and OpenMP's threads running, which a fork would not carry.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, items))
