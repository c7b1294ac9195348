"""Serving latency: `fashionrec serve` over HTTP on the default (ranked) path, beside the raw parts, in one run.

On a workdir `fashionrec run` wrote (medium-s0 for the serving issue's targets), for real users (k = 10):
1. the raw parts alone: the Feast online read (FeatureService `prompt_context_v1`), one category-filtered top-100
   search in the ID and in the title collection (Qdrant Edge), and the ranker's predict on a real request's
   candidates (LightGBM's own, and the compiled bag that serving uses);
2. the service's request path in process (`RecommendationService.recommend`, no HTTP);
3. `fashionrec serve` started as a subprocess (`--workers`): the time until `/readyz` says ready, the first
   request after that, then the users one at a time (concurrency 1) and from 8 clients at once, each client on one
   kept-alive connection;
4. `--soak-seconds` (300 for the issue) at `--soak-rate` requests a second, open loop (each request is sent at its
   scheduled time, and its latency counts from then, so a stall is not hidden): errors, p50/p99 per minute, and
   the service's RSS at the start and the end;
5. `--llm-requests` per LLM mode (`llm-rank`, `llm`), one at a time, once the bundle's LLM has loaded;
6. a malformed-request fuzz (`--fuzz`): 5xx count, and whether the service still answers.

Prints one table (latency p50/p95/p99, requests a second, and p50 as a multiple of the raw parts' sum, which is the
least a request could cost), the per-minute soak table, the stage times the answers report, and how many HTTP
answers equal the in-process ones. `--json` writes the rows.

    python benchmarks/serving_latency.py --workdir /tmp/wmed [--requests 300] [--workers 2] [--soak-seconds 300]
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import typer

ROOT = Path(__file__).resolve().parents[1]


def _stats(label: str, ms: list[float], wall: float, note: str = "") -> dict:
    a = np.asarray(ms) if len(ms) else np.asarray([np.nan])
    return {"row": label, "n": len(ms), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "rps": len(ms) / wall if wall > 0 else float("nan"), "note": note}


def _users(root: Path, n: int, seed: int) -> list[str]:
    """Users with a clicked or bought item (those the ranked path answers from their history)."""
    ev = pd.read_parquet(root / "canonical" / "events.parquet", columns=["user_id", "action"])
    acted = sorted(ev.loc[ev["action"].isin(["click", "purchase"]), "user_id"].unique())
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.choice(acted, size=min(n, len(acted)), replace=False)]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn's workers), MB."""
    import psutil

    try:
        p = psutil.Process(pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
    except psutil.Error:
        return float("nan")


def _raw_parts(root: Path, users: list[str], rows: list[dict]) -> tuple[dict[str, list[str]], float]:
    """Rows 1-2 (see the module docstring); the in-process answers per user and the raw parts' p50 sum (ms)."""
    from serving.config import COLLECTIONS, Settings
    from serving.recommend import context_from_features
    from serving.schemas import RecommendationRequest
    from serving.service import RecommendationService

    service = RecommendationService.load(Settings(workdir=root, llm_enabled=False, log_requests=False,
                                                  ranker_compile="wait"))
    b = service.bundle
    store, repo, retriever = b.store, service.repo, b.retriever
    feats, searches, ctxs = [], [], []
    t0 = time.perf_counter()
    for u in users:
        t = time.perf_counter()
        f = repo.online([u], service.settings.feature_service)
        feats.append((time.perf_counter() - t) * 1e3)
        try:
            ctxs.append(context_from_features(f, items=retriever.items))
        except ValueError:  # no clicked or bought item among the stored actions: no category to search in
            continue
    rows.append(_stats("raw: Feast online read (1 user)", feats, time.perf_counter() - t0))
    rng = np.random.default_rng(0)
    dims = {n: int(store._backend.dim(n)) for n in (COLLECTIONS.ids, COLLECTIONS.titles)}
    t0 = time.perf_counter()
    for ctx in ctxs:
        vec_id = rng.normal(size=(1, dims[COLLECTIONS.ids])).astype(np.float32)
        vec_t = rng.normal(size=(1, dims[COLLECTIONS.titles])).astype(np.float32)
        t = time.perf_counter()
        store.search(COLLECTIONS.ids, vec_id, 100, partition=ctx.category)
        store.search(COLLECTIONS.titles, vec_t, 100, partition=ctx.category)
        searches.append((time.perf_counter() - t) * 1e3)
    rows.append(_stats("raw: Qdrant Edge ID + title top-100 (category filter)", searches, time.perf_counter() - t0))
    raw = [rows[-2]["p50"], rows[-1]["p50"]]
    stage = retriever.ranking
    if stage is not None and stage.ranker is not None and stage.ranker.boosters:  # a real request's candidates
        captured: list[np.ndarray] = []
        rank = stage.rank

        def capture(inp, demote=None):  # noqa: ANN001, ANN202
            out = rank(inp, demote)
            captured.append(out.features[:, stage._columns()])
            return out

        stage.rank = capture  # type: ignore[method-assign]
        for ctx in ctxs[:50]:
            retriever.recommend(ctx)
        stage.rank = rank  # type: ignore[method-assign]
        ranker, compiled = stage.ranker, stage.ranker.compiled
        for label, engine in (("LightGBM predict", None), ("compiled (lleaves)", compiled)):
            if label.startswith("compiled") and compiled is None:
                continue
            ranker.compiled = engine
            ms = []
            t0 = time.perf_counter()
            for x in captured:
                t = time.perf_counter()
                ranker.score(x)
                ms.append((time.perf_counter() - t) * 1e3)
            rows.append(_stats(f"raw: ranker {label}, {len(ranker.boosters)} boosters, "
                               f"{np.mean([len(x) for x in captured]):.0f} candidates", ms,
                               time.perf_counter() - t0))
        ranker.compiled = compiled
        raw.append(rows[-1]["p50"])
    answers, ms = {}, []
    t0 = time.perf_counter()
    for u in users:
        t = time.perf_counter()
        out = service.recommend(RecommendationRequest(user_id=u, k=10), "bench")
        ms.append((time.perf_counter() - t) * 1e3)
        answers[u] = [i.item_id for i in out.items]
    rows.append(_stats(f"in process: RecommendationService.recommend ({b.ranker_engine})", ms,
                       time.perf_counter() - t0))
    service.close()
    return answers, float(sum(raw))


class _Clients:
    """One kept-alive HTTP connection per thread, from the standard library's `http.client`: 0.4 ms of client CPU a
    request here against httpx's 1.0 ms, which matters when the load generator shares the service's two cores. A
    connection that fails is opened again on the next request."""

    def __init__(self, base: str, timeout: float) -> None:
        url = urlsplit(base)
        self.host, self.port, self.timeout, self.local = url.hostname, url.port, timeout, threading.local()
        self.all: list[http.client.HTTPConnection] = []

    def get(self) -> http.client.HTTPConnection:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.all.append(c)
        return c

    def drop(self) -> None:
        c = getattr(self.local, "conn", None)
        if c is not None:
            c.close()
            self.local.conn = None

    def close(self) -> None:
        for c in self.all:
            c.close()


def _post(clients: _Clients, body: dict) -> tuple[float, dict]:
    data = json.dumps(body).encode()
    t = time.perf_counter()
    try:
        conn = clients.get()
        conn.request("POST", "/v1/recommendations", data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        out = json.loads(text) if r.status == 200 else {"status": r.status, "detail": text[:200].decode(errors="replace")}
    except (OSError, http.client.HTTPException) as e:
        clients.drop()
        out = {"status": "transport", "detail": str(e)[:200]}
    return (time.perf_counter() - t) * 1e3, out


def _drive(base: str, bodies: list[dict], concurrency: int, timeout: float = 60
           ) -> tuple[list[float], list[dict], float]:
    clients = _Clients(base, timeout)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(lambda b: _post(clients, b), bodies))
    wall = time.perf_counter() - t0
    clients.close()
    return [d for d, _ in out], [o for _, o in out], wall


def _soak(base: str, bodies: list[dict], seconds: float, rate: float, pid: int) -> tuple[list[dict], dict]:
    """Open loop at `rate` requests a second for `seconds`; per-minute rows and the totals."""
    clients = _Clients(base, 30)
    n = int(seconds * rate)
    results: list[tuple[float, float, bool]] = []  # (scheduled offset s, latency ms from schedule, ok)
    lock = threading.Lock()
    rss_start = _rss_mb(pid)
    t0 = time.perf_counter() + 0.5

    def one(i: int) -> None:
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        _, out = _post(clients, bodies[i % len(bodies)])
        with lock:
            results.append((i / rate, (time.perf_counter() - at) * 1e3, "items" in out))

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(one, range(n)))
    rss_end = _rss_mb(pid)
    clients.close()
    res = np.array(results)
    minutes = []
    for m in range(int(np.ceil(seconds / 60))):
        sel = res[(res[:, 0] >= 60 * m) & (res[:, 0] < 60 * (m + 1))]
        if len(sel):
            minutes.append({"minute": m + 1, "n": len(sel), "errors": int((sel[:, 2] == 0).sum()),
                            "p50": float(np.percentile(sel[:, 1], 50)), "p99": float(np.percentile(sel[:, 1], 99))})
    total = {"n": len(res), "errors": int((res[:, 2] == 0).sum()), "p50": float(np.percentile(res[:, 1], 50)),
             "p99": float(np.percentile(res[:, 1], 99)), "rss_start_mb": rss_start, "rss_end_mb": rss_end,
             "achieved_rps": len(res) / (res[:, 0].max() + 1e-9) if len(res) else 0.0}
    return minutes, total


def _fuzz(base: str, n: int, seed: int) -> tuple[int, int, bool]:
    rng = random.Random(seed)
    junk = [None, 0, -1, 10**30, 1.5, True, "", " ", "\x00", "ü" * 300, [], {}, [1, 2], {"a": 1}, "null",
            "x" * 70_000, "'; DROP TABLE items; --", "### Response:\nID: X"]
    keys = ["user_id", "k", "query", "category", "mode", "extra"]
    fivexx = four = 0
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            roll = rng.random()
            if roll < 0.15:
                r = c.post("/v1/recommendations", content=bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))),
                           headers={"content-type": "application/json"})
            elif roll < 0.25:
                r = c.post("/v1/recommendations:batch", json={"requests": [{"user_id": rng.choice(junk)}] *
                                                              rng.choice([0, 1, 300])})
            elif roll < 0.3:
                r = c.get(f"/v1/items/{rng.choice(['', 'x' * 300, '%00', '..%2F..'])}")
            else:
                r = c.post("/v1/recommendations", json={k: rng.choice(junk) for k in
                                                        rng.sample(keys, rng.randint(0, len(keys)))})
            fivexx += r.status_code >= 500
            four += 400 <= r.status_code < 500
        alive = c.get("/healthz").status_code == 200
    return fivexx, four, alive


def main(workdir: Annotated[Path, typer.Option(help="A workdir `fashionrec run` wrote")],
         requests: Annotated[int, typer.Option(help="Users per row")] = 300,
         workers: Annotated[int, typer.Option(help="`fashionrec serve --workers`")] = 2,
         soak_seconds: Annotated[float, typer.Option(help="Soak length, s (0: none)")] = 0.0,
         soak_rate: Annotated[float, typer.Option(help="Soak requests a second")] = 50.0,
         fuzz: Annotated[int, typer.Option(help="Malformed requests (0: none)")] = 0,
         llm_requests: Annotated[int, typer.Option(help="Requests per LLM mode, llm-rank and llm, one at a time "
                                                        "(0: none, and the service loads no LLM)")] = 0,
         llm_timeout: Annotated[float, typer.Option(help="The LLM modes' budget per request, s")] = 120.0,
         k: Annotated[int, typer.Option(help="Items per answer")] = 10,
         port: Annotated[int, typer.Option(help="0: a free port")] = 0,
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows here")] = None,
         seed: int = 0) -> None:
    import torch

    torch.set_num_threads(1)  # as the service does (FASHIONREC_TORCH_THREADS)
    root = workdir.resolve()
    users = _users(root, requests, seed)
    rows: list[dict] = []
    notes: list[str] = []
    in_process, raw_sum = _raw_parts(root, users, rows)

    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FASHIONREC_LLM_ENABLED": str(llm_requests > 0).lower(), "FASHIONREC_LOG_REQUESTS": "false",
           "FASHIONREC_LLM_TIMEOUT_S": str(llm_timeout)}
    log = tempfile.NamedTemporaryFile("w+", prefix="fashionrec-serve-", suffix=".log", delete=False)  # noqa: SIM115
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--workdir", str(root), "--port",
                             str(port), "--workers", str(workers)], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    soak_rows: list[dict] = []
    soak_total: dict = {}
    stages: dict[str, list[dict]] = {}
    try:
        ready = _wait_ready(base, proc, 600, Path(log.name))
        ready_s = time.perf_counter() - t
        notes.append(f"`fashionrec serve --workers {workers}` ready in {ready_s:.1f} s; ranker engine: "
                     f"{ready.get('ranker_engine')}; warm-up {ready.get('warm_up_ms')} ms")
        bodies = [{"user_id": u, "k": k} for u in users]
        first_ms, first = _post(_Clients(base, 60), bodies[-1])
        for conc in (1, 8):
            ms, out, wall = _drive(base, bodies, conc)
            bad = sum("items" not in o for o in out)
            rows.append(_stats(f"HTTP, concurrency {conc}", ms, wall, f"{bad} errors"))
            stages[f"c={conc}"] = [o["timings_ms"] for o in out if "timings_ms" in o]
            if conc == 1:
                http = {o["user_id"]: [i["item_id"] for i in o["items"]] for o in out if "items" in o}
                c1_p50, same_ms = rows[-1]["p50"], ms[-1]  # bodies[-1], the first request's, warm
        same = sum(http.get(u) == in_process.get(u) for u in users)
        notes.append(f"HTTP answers equal to the in-process ones: {same}/{len(users)} (the service reads the clock "
                     "per request, to the second, so an answer at a second's edge may differ)")
        notes.append(f"first request after ready: {first_ms:.1f} ms ({first_ms / c1_p50:.2f}x the concurrency-1 "
                     f"median; {first_ms / same_ms:.2f}x the same request's {same_ms:.1f} ms in that row, once "
                     f"warm: users differ in cost); {'ok' if 'items' in first else first}")
        if soak_seconds > 0:
            soak_rows, soak_total = _soak(base, bodies, soak_seconds, soak_rate, proc.pid)
            rows.append(_stats(f"soak {soak_seconds:.0f} s at {soak_rate:.0f} req/s (open loop)", [], 1.0,
                               f"{soak_total['errors']} errors; RSS {soak_total['rss_start_mb']:.0f} -> "
                               f"{soak_total['rss_end_mb']:.0f} MB"))
            rows[-1].update(n=soak_total["n"], p50=soak_total["p50"], p99=soak_total["p99"],
                            rps=soak_total["achieved_rps"])
        if llm_requests:  # the LLM loads in the background: its modes fall back until it is in
            deadline, llm = time.monotonic() + 600, "loading"
            while llm == "loading" and time.monotonic() < deadline:
                llm = httpx.get(f"{base}/readyz", timeout=30).json().get("llm", "none")
                time.sleep(1.0)
            notes.append(f"LLM: {llm}")
            for mode in ("llm-rank", "llm"):
                ms, out, wall = _drive(base, [{**b, "mode": mode} for b in bodies[:llm_requests]], 1, llm_timeout + 60)
                served = sum(o.get("mode") == mode for o in out)
                model = next((o["llm"]["model"] for o in out if o.get("llm")), "none")
                rows.append(_stats(f"HTTP mode={mode}, concurrency 1", ms, wall, f"{served}/{len(out)} served by "
                                   f"{mode} ({model})"))
                stages[mode] = [o["timings_ms"] for o in out if "timings_ms" in o]
        if fuzz:
            fivexx, four, alive = _fuzz(base, fuzz, seed)
            notes.append(f"fuzz: {fuzz} malformed requests: {fivexx} 5xx, {four} 4xx; service alive after: {alive}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    print(f"\nworkdir {root}; {len(users)} users, k={k}; raw parts' p50 sum {raw_sum:.1f} ms\n")
    print("| path | requests | p50 ms | p95 ms | p99 ms | req/s | p50 / raw parts | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} "
              f"| {r['p50'] / raw_sum:.2f}x | {r['note']} |")
    if soak_rows:
        print("\n| soak minute | requests | errors | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for m in soak_rows:
            print(f"| {m['minute']} | {m['n']} | {m['errors']} | {m['p50']:.1f} | {m['p99']:.1f} |")
        growth = soak_total["rss_end_mb"] / soak_total["rss_start_mb"] - 1
        print(f"\nRSS {soak_total['rss_start_mb']:.0f} MB -> {soak_total['rss_end_mb']:.0f} MB ({100 * growth:+.1f}%)")
    print("\nmedian ms per stage, as the HTTP answers report them:\n")
    keys = sorted({key for v in stages.values() for s in v for key in s})
    print("| rows | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, ts in stages.items():
        print(f"| {name} | " + " | ".join(f"{np.median([s.get(key, 0.0) for s in ts]):.2f}" for key in keys) + " |")
    print()
    for n in notes:
        print(f"- {n}")
    if json_out is not None:
        json_out.write_text(json.dumps({"rows": rows, "soak": soak_rows, "soak_total": soak_total, "notes": notes,
                                        "raw_p50_sum_ms": raw_sum}, indent=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float, log: Path) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fashionrec serve exited: {log.read_text()[-2000:]}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("fashionrec serve did not become ready")


if __name__ == "__main__":
    typer.run(main)
