"""The continuous path on the bundled sample split at a date: the base is built by `fashionrec run`, the rest lands in
the inbox as one batch, one tick of the real Dagster sensor starts the incremental job, and the running HTTP service
returns a new item and sees a user's new event, without a restart or any retraining. The same batch again changes
nothing. Publishing bundles while requests run fails none of them, and the versions in the answers switch."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from dagster import build_sensor_context
from typer.testing import CliRunner

from feature_repo.incremental import applied, apply_batch, read_batch
from feature_repo.schema import CanonicalTables
from orchestration.cli import app as cli
from orchestration.instance import workdir_instance
from orchestration.resources import FeastResource, WorkdirResource
from orchestration.sensors import inbox_batches, incremental_update
from serving.bundle import publish_bundle
from serving.config import Settings
from serving.registry import SERVING, Registry
from tests.serving.test_app import running

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[2] / "feature_repo" / "sample"
CUT = pd.Timestamp("2023-11-15", tz="UTC")


def split_sample(base: Path, batch: Path) -> None:
    """Base: items created and events logged up to CUT; batch: everything after."""
    t = CanonicalTables.read(SAMPLE)
    new_items = t.items["created_at"] > CUT
    new_events = t.events["timestamp"] > CUT
    new_results = t.search_results["timestamp"] > CUT
    CanonicalTables(t.items[~new_items], t.events[~new_events], t.search_results[~new_results]).write(base)
    CanonicalTables(t.items[new_items], t.events[new_events], t.search_results[new_results]).write(batch)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("stream")
    base, batch, work = root / "base", root / "batch-001", root / "work"
    split_sample(base, batch)
    result = CliRunner().invoke(cli, ["run", "--data", str(base), "--workdir", str(work), "--models", "core-trm",
                                      "--epochs", "1", "--no-llm"])
    assert result.exit_code == 0, result.output
    with running(Settings(workdir=work, swap_check_s=0.0, log_requests=False)) as (client, service):
        yield {"work": work, "batch": batch, "client": client, "service": service}


def _tick(work: Path) -> list:
    """One evaluation of the real inbox sensor, and its run requests executed as the daemon would."""
    resources = {"workdir": WorkdirResource(workdir=str(work)), "feast": FeastResource(workdir=str(work))}
    with workdir_instance(work) as instance:
        ctx = build_sensor_context(instance=instance, resources=resources)
        requests = inbox_batches(ctx)
        requests = requests if isinstance(requests, list) else []
        for rr in requests:
            res = incremental_update.execute_in_process(run_config=rr.run_config, instance=instance,
                                                        resources=resources, tags={"dagster/run_key": rr.run_key})
            assert res.success
    return requests


def test_a_batch_is_servable_after_one_sensor_tick(world: dict) -> None:
    work, client = world["work"], world["client"]
    t = CanonicalTables.read(SAMPLE)
    before_bundle = Registry.of(work).pointer_stamp(SERVING)
    assert before_bundle is not None  # the full run published the first bundle
    # A new item that a shopper bought after the cut, and a user whose events continue after it.
    late = t.events[(t.events["timestamp"] > CUT) & (t.events["action"] == "purchase")]
    items = t.items.set_index("item_id")
    item = next(i for i in late["item_id"] if items.at[i, "created_at"] > CUT)
    title, category = items.at[item, "title"], items.at[item, "category"]
    user = late["user_id"].iloc[0]
    last_event = t.events[t.events["user_id"] == user]["timestamp"].max()

    r = client.post("/v1/recommendations", json={"user_id": "someone", "k": 100, "query": title,
                                                 "category": category}).json()
    assert item not in [i["item_id"] for i in r["items"]]
    assert client.get(f"/v1/items/{item}").status_code == 404

    shutil.copytree(world["batch"], work / "inbox" / "batch-001")
    requests = _tick(work)
    assert [rr.tags["batch"] for rr in requests] == ["batch-001"]
    assert (work / "inbox" / "processed" / "batch-001").is_dir() and not (work / "inbox" / "batch-001").exists()
    log = applied(work / "canonical")
    assert [e["name"] for e in log] == ["batch-001"] and log[0]["appended"]["items"] == (t.items["created_at"] > CUT).sum()

    # The running service swapped to the new bundle: the new item is servable, the user's new event is online.
    r = client.post("/v1/recommendations", json={"user_id": "someone", "k": 100, "query": title,
                                                 "category": category}).json()
    assert r["models"]["bundle"] != before_bundle
    assert item in [i["item_id"] for i in r["items"]]
    assert client.get(f"/v1/items/{item}").json()["title"] == title
    events = client.get(f"/v1/users/{user}/history").json()["events"]
    assert pd.Timestamp(events[-1]["timestamp"]) == last_event.floor("ms")

    # The same batch again: nothing changes (canonical tables, the log, the bundle).
    snapshot = {n: (work / "canonical" / f"{n}.parquet").read_bytes() for n in ("items", "events", "search_results")}
    bundle = Registry.of(work).pointer_stamp(SERVING)
    shutil.copytree(world["batch"], work / "inbox" / "batch-001")
    assert len(_tick(work)) == 1
    assert {n: (work / "canonical" / f"{n}.parquet").read_bytes() for n in snapshot} == snapshot
    assert len(applied(work / "canonical")) == 1 and Registry.of(work).pointer_stamp(SERVING) == bundle


def test_bad_batch_rows_are_quarantined_with_reasons(tmp_path: Path) -> None:
    t = CanonicalTables.read(SAMPLE)
    old = t.events["timestamp"] <= CUT
    canonical = tmp_path / "canonical"
    CanonicalTables(t.items[t.items["created_at"] <= CUT], t.events[old],
                    t.search_results[t.search_results["timestamp"] <= CUT]).write(canonical)
    batch = tmp_path / "b1"
    ev = t.events[~old].head(20).copy()
    ev.loc[ev.index[0], "item_id"] = "NO-SUCH-ITEM"
    ev.loc[ev.index[1], "action"] = "teleport"
    late = t.events[old].groupby("user_id").tail(1).iloc[:1].copy()  # older than that user's latest event
    late["timestamp"] = late["timestamp"] - pd.Timedelta(days=30)
    late["query"], late["search_id"], late["action"], late["item_id"] = None, None, "click", t.items["item_id"].iloc[0]
    dup = t.events[old].tail(1)  # already canonical
    CanonicalTables(t.items.head(0), pd.concat([ev, late, dup]), t.search_results.head(0)).write(batch)
    res = apply_batch(batch, canonical)
    reasons = res.quarantined["events"]
    assert reasons.get("unknown_item", 0) >= 1 and reasons.get("bad_action", 0) == 1
    # The re-sent click is the same user, item and moment as a canonical row: one click, so a repeat in that moment.
    assert reasons.get("timestamp_out_of_order", 0) >= 1 and reasons.get("repeat_in_moment", 0) >= 1
    kept = res.appended["events"]
    assert kept + sum(reasons.values()) == len(read_batch(batch).events)  # nothing lost
    q = pd.read_parquet(canonical / "quarantine" / "batches" / "b1" / "events.parquet")
    assert len(q) == sum(reasons.values()) and q["reason"].notna().all()
    assert apply_batch(batch, canonical).already_applied


def test_publishing_while_requests_run_fails_none(world: dict) -> None:
    work, client = world["work"], world["client"]
    user = CanonicalTables.read(SAMPLE).events["user_id"].iloc[0]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/recommendations", json={"user_id": user, "k": 5})
                seen.append((r.status_code, r.json().get("models", {}).get("bundle", "")))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    first = Registry.of(work).pointer_stamp(SERVING)
    new = publish_bundle(work, reason="test publish")
    time.sleep(2.0)
    Registry.of(work).rollback(SERVING, first)  # and back: one command's worth
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join(30)
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    assert {first, new.version} <= set(versions)
    assert versions[-1] == first  # rolled back
