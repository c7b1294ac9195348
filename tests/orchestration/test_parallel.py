"""Independent fits inside a step, in processes of their own (`orchestration.parallel`): the same results as one
after the other in this process, and only as many processes as the step's share of the cores."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_repo.layout import Layout
from models.text import TitleTrainConfig
from models.text.fit import TitleFit, encode_titles, fit_title_period
from orchestration.parallel import parallel_map, step_cores
from tests.orchestration.test_text_assets import tiny_workdir


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_parallel_map_keeps_the_order_and_uses_processes_only_with_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    out = parallel_map(square_and_pid, [3, 1, 2], workers=2)
    assert [v for v, _ in out] == [9, 1, 4]
    assert os.getpid() not in {p for _, p in out}  # spawned processes did the work
    alone = parallel_map(square_and_pid, [3, 1, 2], workers=1)
    assert alone == [(9, os.getpid()), (1, os.getpid()), (4, os.getpid())]
    assert parallel_map(square_and_pid, [5], workers=2) == [(25, os.getpid())]  # one piece: here
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the multiprocess executor's share for two steps on two cores
    assert step_cores() == 1 and parallel_map(square_and_pid, [1, 2])[1] == (4, os.getpid())
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert step_cores() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert step_cores() == len(os.sched_getaffinity(0))


@pytest.mark.slow  # two title fits twice, two of them in spawned processes
def test_title_fits_in_two_processes_equal_the_fits_here(tmp_path: Path) -> None:
    tiny_workdir(tmp_path)
    lay = Layout(tmp_path)
    cfg = replace(TitleTrainConfig(), epochs=2, show_progress=False)

    def jobs(root: str) -> list[TitleFit]:
        return [TitleFit(p, lay.canonical, lay.splits, tmp_path / root / p, cfg) for p in ("val", "test")]

    here = parallel_map(fit_title_period, jobs("here"), workers=1)
    there = parallel_map(fit_title_period, jobs("there"), workers=2)
    for (r1, d1), (r2, d2) in zip(here, there, strict=True):
        assert r1.trained and r1.n_pairs == r2.n_pairs and r1.epoch_losses == r2.epoch_losses
        w1, w2 = torch.load(d1 / "model.pt"), torch.load(d2 / "model.pt")
        assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    titles = ["red sneaker", "blue dress", "gold ring"]
    encoded = parallel_map(encode_titles, [(d, titles) for _, d in there], workers=2)
    assert np.array_equal(encoded[0], encode_titles((here[0][1], titles)))
    assert not np.array_equal(encoded[0], encoded[1])  # the two fits learned different encoders
