"""The ranker's boosters compiled to native code (lleaves, on LLVM), bit-identical to LightGBM's own predict.

LightGBM walks its trees through a generic interpreter; lleaves compiles each tree into branches of machine code
(4-5x faster on the serving path's few hundred candidates). Compiled with one block of trees per booster
(`fblocksize` = its tree count), a booster sums its trees in LightGBM's order, in float64, so its scores are the
same floats, not merely close: `compile_ranker` checks that on a probe matrix (NaNs included) before it returns,
and the evaluation, which keeps LightGBM's predict, stays exactly equal to serving.

Compiling takes tens of seconds per booster on this machine, so the shared objects are cached, keyed by the
booster's text, lleaves' version and the host CPU (`$FASHIONREC_CACHE/ranker`, default `~/.cache/fashionrec`):
an incremental bundle, which carries its parent's ranker, loads them in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from feature_repo.layout import cache_root

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    return cache_root() / "ranker"


def _host() -> str:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    return f"{llvm.get_host_cpu_name()}-{hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()[:8]}"


def _key(text: str, host: str) -> str:
    return hashlib.sha256(f"{version('lleaves')}|{version('llvmlite')}|{host}|".encode() + text.encode()
                          ).hexdigest()[:24]


def is_cached(boosters: Sequence[Any], cache: Path | None = None) -> bool:
    """Whether every booster's compiled object is in the cache (then `compile_ranker` takes milliseconds)."""
    cache = Path(cache) if cache is not None else cache_dir()
    host = _host()
    return all((cache / f"{_key(b.model_to_string(), host)}.so").exists() for b in boosters)


@dataclass
class CompiledBag:
    """The bag's boosters as native functions; `predict` is `LearnedRanker.score`'s average, bit for bit."""

    models: list[Any]  # lleaves.Model, compiled
    seconds: float  # compile (or cache load) time
    cached: int  # boosters loaded from the cache rather than compiled

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) float64: the mean of the boosters' raw scores of x (n, F)."""
        x64 = np.ascontiguousarray(x, np.float64)
        return np.mean([m.predict(x64, n_jobs=1) for m in self.models], axis=0).astype(np.float64)


def compile_ranker(boosters: Sequence[Any], n_features: int, cache: Path | None = None,
                   probe_rows: int = 512) -> CompiledBag:
    """Compile (or load from the cache) each LightGBM booster; raise ValueError unless the compiled bag scores a
    random probe matrix exactly as LightGBM does."""
    import lleaves

    cache = Path(cache) if cache is not None else cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    host, models, cached = _host(), [], 0
    for b in boosters:
        text = b.model_to_string()
        so = cache / f"{_key(text, host)}.so"
        cached += so.exists()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        try:
            m = lleaves.Model(model_file=f.name)
            if not so.exists():  # compiled to a temporary name first: a half-written cache file is never read
                tmp = so.with_suffix(f".{os.getpid()}.tmp")
                m.compile(cache=str(tmp), fblocksize=max(1, m.num_trees()))
                tmp.replace(so)
                m = lleaves.Model(model_file=f.name)
            m.compile(cache=str(so), fblocksize=max(1, m.num_trees()))
        finally:
            os.unlink(f.name)
        models.append(m)
    bag = CompiledBag(models, time.perf_counter() - t0, cached)
    rng = np.random.default_rng(0)
    probe = rng.normal(0, 3, size=(probe_rows, n_features))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    expect = np.mean([b.predict(probe, num_threads=1) for b in boosters], axis=0)
    if not np.array_equal(bag.predict(probe), expect):
        raise ValueError("the compiled ranker's scores differ from LightGBM's on the probe matrix")
    return bag
