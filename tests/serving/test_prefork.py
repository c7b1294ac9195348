"""`fashionrec serve --workers N` (`serving.prefork`) as a subprocess over the bundled sample's workdir.

In a module of its own: the app tests' in-process service (a module fixture there) holds the serving bundle's
Edge shards open, and an Edge shard opens in one process at a time.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

from tests.helpers import acted_users, free_port
from tests.serving.test_app import _burst_matches_one_at_a_time


@pytest.fixture(scope="module")
def workdir(sample_workdir: Path) -> Path:
    return sample_workdir


@pytest.fixture(scope="module")
def users(workdir: Path) -> pd.DataFrame:
    """Users with a clicked or bought item, and the category of their last one."""
    return acted_users(workdir)


@pytest.mark.parametrize("table_search", [True, False])
def test_two_workers_on_the_embedded_store_answer_as_one(users: pd.DataFrame, workdir: Path, tmp_path: Path,
                                                         table_search: bool) -> None:
    """`fashionrec serve --workers 2` without a Qdrant server: the parent loads the bundle once and forks two
    workers, and 8 clients at once get the one-at-a-time answers. Scanning the bundle's tables (the default), a
    worker opens no collection; searching the collections, each opens its own copy of the Edge shards (removed
    when it stops). A worker that is killed is replaced, and the service keeps answering."""
    import os
    import signal
    import sys

    port = free_port()
    copies_each = 0 if table_search else 1
    env = {**os.environ, "FASHIONREC_LOG_REQUESTS": "false", "TMPDIR": str(tmp_path),
           "FASHIONREC_TABLE_SEARCH": str(table_search).lower()}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--workdir", str(workdir),
                                 "--port", str(port), "--workers", "2", "--no-llm"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:  # ready (a worker accepts only once loaded) and both workers have their copy
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.time() < deadline, f"the two workers did not become ready: {log.read_text()[-3000:]}"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                ready = False
            copies = list(tmp_path.glob("fashionrec-qdrant-worker-*"))
            assert "warm-up of bundle" not in log.read_text(), log.read_text()[-3000:]  # e.g. a shard held elsewhere
            if ready and len(copies) == 2 * copies_each:
                break
            time.sleep(0.5)
        assert all((c / "item_title_embeddings").is_dir() for c in copies)
        assert httpx.get(f"{base}/readyz", timeout=5).json()["vector_store"] == "ok"
        assert httpx.get(f"{base}/readyz", timeout=5).json()["workers"] == "ok"  # both warmed before it said ready
        _burst_matches_one_at_a_time(base, list(users.head(8).itertuples(index=False)) * 2, workdir, table_search)
        children = sorted(c.pid for c in psutil.Process(proc.pid).children())
        assert len(children) == 2 and "loaded bundle" in log.read_text()  # forked from the one load
        os.kill(children[0], signal.SIGKILL)  # the parent removes its copy: nothing runs in a killed process
        deadline = time.time() + 120
        while True:
            now = sorted(c.pid for c in psutil.Process(proc.pid).children())
            if len(now) == 2 and children[0] not in now:
                break
            assert time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert "starting another" in log.read_text()
        _burst_matches_one_at_a_time(base, list(users.head(4).itertuples(index=False)), workdir, table_search)
        assert len(list(tmp_path.glob("fashionrec-qdrant-worker-*"))) == 2 * copies_each
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert not list(tmp_path.glob("fashionrec-qdrant-worker-*"))  # each worker removed its copy
