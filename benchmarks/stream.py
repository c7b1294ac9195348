"""From a batch landing in the inbox to its new items being served, on medium-s0-stream.

1. builds the base (the stream set's base files) with `fashionrec run --no-llm --models core-trm`, unless the
   workdir already holds it;
2. starts `fashionrec serve` on the workdir;
3. copies the `*_delta.parquet` files into `<workdir>/inbox/<batch>/` (the landing) and runs `fashionrec update`
   (what one tick of the inbox sensor runs; the daemon adds its polling interval, 30 s by default, on top);
4. asks the service, every 0.2 s, for a new item bought in the delta, by its title in its category, until it comes
   back; and checks that a user's newest delta event is in their online history.
Prints the update's steps, and the time from landing to servable.

    python benchmarks/stream.py [--data ../shared/data/synthetic/medium-s0-stream] [--workdir /tmp/wstream]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import httpx
import pandas as pd
import typer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "synthetic" / "medium-s0-stream"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(data: Annotated[Path, typer.Option(help="A stream set: base files and *_delta.parquet")] = DEFAULT,
         workdir: Annotated[Path, typer.Option(help="Workdir (the base is built once)")] = Path("/tmp/wstream"),
         rebuild: Annotated[bool, typer.Option(help="Rebuild the base even if the workdir has it")] = False) -> None:
    workdir = workdir.resolve()
    if rebuild or not (workdir / "registry" / "serving" / "current").exists():
        if workdir.exists():
            shutil.rmtree(workdir)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestration.cli", "run", "--data", str(data), "--workdir",
                        str(workdir), "--models", "core-trm", "--no-llm", "--log-level", "WARNING"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        print(f"base built in {time.perf_counter() - t:.0f} s")
    items = pd.read_parquet(data / "items_delta.parquet")
    events = pd.read_parquet(data / "events_delta.parquet")
    bought = events[(events["action"] == "purchase") & events["item_id"].isin(items["item_id"])]
    item = items.set_index("item_id").loc[bought["item_id"].iloc[0]]
    user = bought["user_id"].iloc[0]
    newest = events.loc[events["user_id"] == user, "timestamp"].max()

    port = _port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "FASHIONREC_LLM_ENABLED": "false", "FASHIONREC_LOG_REQUESTS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--workdir", str(workdir), "--port",
                             str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    body = {"user_id": "stream-probe", "k": 100, "query": str(item["title"]), "category": str(item["category"])}
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(600):
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            before = c.post("/v1/recommendations", json=body).json()
            assert item.name not in [i["item_id"] for i in before["items"]], "the new item is served before its batch"
            batch = workdir / "inbox" / f"delta-{int(time.time())}"
            t_land = time.perf_counter()
            batch.mkdir(parents=True)
            for name in ("items", "events", "search_results"):
                shutil.copy(data / f"{name}_delta.parquet", batch / f"{name}.parquet")
            out = subprocess.run([sys.executable, "-m", "orchestration.cli", "update", "--workdir", str(workdir)],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout
            t_updated = time.perf_counter()
            while True:
                r = c.post("/v1/recommendations", json=body).json()
                if item.name in [i["item_id"] for i in r["items"]]:
                    break
                assert time.perf_counter() - t_updated < 60, "not servable 60 s after the update"
                time.sleep(0.2)
            t_served = time.perf_counter()
            hist = c.get(f"/v1/users/{user}/history").json()["events"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    timings = dict(re.findall(r"(\w+) ([0-9.]+) s", out.split("timings:")[-1]))
    print(out.strip())
    print(f"\nbatch: {len(items):,} new items, {len(events):,} events; probe item {item.name} ({item['category']})\n")
    print("| step | seconds |")
    print("|---|---|")
    for k, v in timings.items():
        print(f"| update: {k} | {float(v):.2f} |")
    print(f"| `fashionrec update` process (incl. start-up) | {t_updated - t_land:.2f} |")
    print(f"| service swap after the update | {t_served - t_updated:.2f} |")
    print(f"| **landing -> servable** | **{t_served - t_land:.2f}** |")
    print(f"\nbundle before {before['models']['bundle']}, after {r['models']['bundle']}; new item at rank "
          f"{[i['item_id'] for i in r['items']].index(item.name) + 1} of {len(r['items'])}; user {user}'s newest "
          f"online event {hist[-1]['timestamp']} (delta's {newest.isoformat()})")
    print(json.dumps({"landing_to_servable_s": round(t_served - t_land, 2)}))


if __name__ == "__main__":
    typer.run(main)
