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

from evaluation.ranking import product_name
from feature_repo.incremental import applied, apply_batch, read_batch
from feature_repo.schema import CanonicalTables
from orchestration.cli import app as cli
from orchestration.instance import workdir_instance
from orchestration.resources import FeastResource, WorkdirResource
from orchestration.sensors import inbox_batches, incremental_update
from serving.bundle import publish_bundle
from serving.config import Settings
from serving.registry import SERVING, Registry
from tests.helpers import running

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
    world["before"] = {"bundle": before_bundle, "item": item, "answers": probe_answers(client, t, title, category)}

    shutil.copytree(world["batch"], work / "inbox" / "batch-001")
    requests = _tick(work)
    assert [rr.tags["batch"] for rr in requests] == ["batch-001"]
    assert (work / "inbox" / "processed" / "batch-001").is_dir() and not (work / "inbox" / "batch-001").exists()
    log = applied(work / "canonical")
    assert [e["name"] for e in log] == ["batch-001"] and log[0]["appended"]["items"] == (t.items["created_at"] > CUT).sum()

    # The running service swapped to the new bundle: the new item is servable, the user's new event is online.
    # Asked for by its exact title, a shopper with no history gets it in the top 10; by its name alone (no colour,
    # no size), one of its family's variants. No retraining happened: the ranker was trained on the base.
    r = client.post("/v1/recommendations", json={"user_id": "someone", "k": 10, "query": title,
                                                 "category": category}).json()
    assert r["models"]["bundle"] != before_bundle
    assert item in [i["item_id"] for i in r["items"]], [i["title"] for i in r["items"]]
    name = product_name(title, items.at[item, "color"], items.at[item, "size"])
    assert name and name != title.lower()
    r = client.post("/v1/recommendations", json={"user_id": "someone", "k": 10, "query": name,
                                                 "category": category}).json()
    family = set(items.index[items["family_id"] == items.at[item, "family_id"]])
    assert family & {i["item_id"] for i in r["items"]}, (name, [i["title"] for i in r["items"]])
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


def probe_answers(client: httpx.Client, t: CanonicalTables, title: str, category: str) -> list[list[str]]:
    """Answers that depend only on the bundle: users the batch does not touch (their online sequences stay the same),
    and a query from an unknown user."""
    late_users = set(t.events.loc[t.events["timestamp"] > CUT, "user_id"])
    quiet = sorted(set(t.events["user_id"]) - late_users)[:6]
    reqs = [{"user_id": u, "k": 10} for u in quiet] + [{"user_id": "someone", "k": 10, "query": title,
                                                         "category": category}]
    return [[i["item_id"] for i in client.post("/v1/recommendations", json=r).json()["items"]] for r in reqs]


def _wait_for_bundle(client: httpx.Client, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.post("/v1/recommendations", json={"user_id": "someone", "k": 1, "query": "shoes"}).json()
        if r["models"]["bundle"] == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"the service did not swap to {version}")


def test_rollback_serves_exactly_what_the_earlier_bundle_served(world: dict) -> None:
    """After the batch, rolling back to the bundle before it gives the answers that version gave before the batch:
    the same lists, and the batch's new item unknown again (a bundle holds its catalog, search log, activity windows,
    best sellers and collections)."""
    work, client, before = world["work"], world["client"], world["before"]
    t = CanonicalTables.read(SAMPLE)
    items = t.items.set_index("item_id")
    title, category = items.at[before["item"], "title"], items.at[before["item"], "category"]
    after = Registry.of(work).pointer_stamp(SERVING)
    assert after != before["bundle"]
    Registry.of(work).rollback(SERVING, before["bundle"])
    _wait_for_bundle(client, before["bundle"])
    assert probe_answers(client, t, title, category) == before["answers"]
    assert client.get(f"/v1/items/{before['item']}").status_code == 404
    Registry.of(work).activate(SERVING, after)  # forward again
    _wait_for_bundle(client, after)
    assert client.get(f"/v1/items/{before['item']}").status_code == 200


def _small_batch(work: Path, folder: Path) -> tuple[str, int]:
    """A batch of a new item and a few clicks after everything so far; returns the new item and the event count."""
    t = CanonicalTables.read(work / "canonical")
    after = t.events["timestamp"].max() + pd.Timedelta(days=1)
    item = t.items.iloc[[0]].assign(item_id="NEW-KILL-1", created_at=after, title="kill test tote bag")
    users = sorted(t.events["user_id"].unique())[:3]
    clicks = [{"user_id": u, "session_id": 999_000 + k, "timestamp": after + pd.Timedelta(minutes=k), "action": a,
               "item_id": i, "query": None, "search_id": pd.NA}
              for k, (u, a, i) in enumerate([(users[0], "click", "NEW-KILL-1"), (users[0], "purchase", "NEW-KILL-1"),
                                             (users[1], "click", t.items["item_id"].iloc[1]),
                                             (users[2], "click", t.items["item_id"].iloc[2])])]
    events = pd.DataFrame(clicks).astype({"search_id": "Int64"})
    CanonicalTables(item, events, t.search_results.head(0)).write(folder)
    return "NEW-KILL-1", len(events)


def test_killed_update_keeps_serving_and_the_next_one_completes_it_once(world: dict) -> None:
    """SIGKILL `fashionrec update` while it publishes a bundle: requests keep being answered from the previous
    version, no half-written version ever becomes current, and the next `fashionrec update` completes the batch
    exactly once (appended once, one bundle with it)."""
    import os
    import signal
    import subprocess
    import sys

    work, client = world["work"], world["client"]
    reg = Registry.of(work)
    before = reg.pointer_stamp(SERVING)
    n_events = len(CanonicalTables.read(work / "canonical").events)
    item, n_new = _small_batch(work, work / "inbox" / "batch-kill")
    user = CanonicalTables.read(SAMPLE).events["user_id"].iloc[0]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/recommendations", json={"user_id": user, "k": 5})
                seen.append((r.status_code, r.json().get("models", {}).get("bundle", "")))
                time.sleep(0.05)

    th = threading.Thread(target=hammer)
    th.start()
    cmd = [sys.executable, "-m", "orchestration.cli", "update", "--workdir", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[2])
    staging_root = reg.root / SERVING
    deadline = time.monotonic() + 300
    while not any(staging_root.glob(".staging-*")):  # publishing has begun: the new version is being written
        assert proc.poll() is None, "fashionrec update finished before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(1.5)  # the service keeps answering, from the version it had
    assert reg.pointer_stamp(SERVING) == before
    assert (work / "inbox" / "batch-kill").is_dir()  # not moved: the batch is not done
    assert client.get(f"/v1/items/{item}").status_code == 404

    done = CliRunner().invoke(cli, ["update", "--workdir", str(work)])
    assert done.exit_code == 0, done.output
    assert "completing" in done.output
    stop.set()
    th.join(60)
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    versions = set(reg.versions(SERVING))
    assert {v for _, v in seen} <= versions  # every answer came from a complete version
    new = reg.current(SERVING)
    assert new is not None and new.version != before and "batch-kill" in new.manifest["data"]["batches"]
    assert not any(staging_root.glob(".staging-*"))  # the dead publisher's staging folder is gone
    assert [e["name"] for e in applied(work / "canonical")].count("batch-kill") == 1
    assert len(CanonicalTables.read(work / "canonical").events) == n_events + n_new  # appended once
    _wait_for_bundle(client, new.version)
    assert client.get(f"/v1/items/{item}").json()["title"] == "kill test tote bag"


def test_bad_batch_rows_are_quarantined_with_reasons(tmp_path: Path) -> None:
    t = CanonicalTables.read(SAMPLE)
    old = t.events["timestamp"] <= CUT
    canonical = tmp_path / "canonical"
    CanonicalTables(t.items[t.items["created_at"] <= CUT], t.events[old],
                    t.search_results[t.search_results["timestamp"] <= CUT]).write(canonical)
    batch = tmp_path / "b1"
    known = t.items.loc[t.items["created_at"] <= CUT, "item_id"]
    item_rows = t.events["action"].isin(["click", "purchase"])
    ev = t.events[~old & item_rows & t.events["item_id"].isin(known)].head(20).copy()  # 20 valid later clicks/buys
    ev.loc[ev.index[0], "item_id"] = "NO-SUCH-ITEM"
    ev.loc[ev.index[1], "action"] = "teleport"
    late = t.events[old].groupby("user_id").tail(1).iloc[:1].copy()  # older than that user's latest event
    late["timestamp"] = late["timestamp"] - pd.Timedelta(days=30)
    late["query"], late["search_id"], late["action"], late["item_id"] = None, None, "click", t.items["item_id"].iloc[0]
    dup = t.events[old & item_rows].tail(1)  # a click or purchase already canonical, sent again
    CanonicalTables(t.items.head(0), pd.concat([ev, late, dup]), t.search_results.head(0)).write(batch)
    res = apply_batch(batch, canonical)
    # One row per fault, each with its own reason; the re-sent row is the same user, item and moment as a canonical
    # one: one action, so a repeat in that moment.
    assert res.quarantined["events"] == {"unknown_item": 1, "bad_action": 1, "timestamp_out_of_order": 1,
                                         "repeat_in_moment": 1}
    reasons = res.quarantined["events"]
    kept = res.appended["events"]
    assert kept == 18 and kept + sum(reasons.values()) == len(read_batch(batch).events)  # nothing lost
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

    def served(version: str, timeout: float = 60.0) -> None:  # opening a bundle takes longer on a busy machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (seen and seen[-1][1] == version):
            time.sleep(0.1)
        time.sleep(0.5)  # and a few requests more

    served(new.version)
    Registry.of(work).rollback(SERVING, first)  # and back: one command's worth
    served(first)
    stop.set()
    for th in threads:
        th.join(30)
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    assert {first, new.version} <= set(versions)
    assert versions[-1] == first  # rolled back
