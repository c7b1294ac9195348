"""Serving latency: `fashionrec serve` over HTTP against the framework in process and the raw store calls, one run.

On a workdir `fashionrec run` wrote (medium-s0 for the issue's targets), for the same requests from real users:
1. raw calls alone: the Feast online read (FeatureService `prompt_context_v1`) and one category-filtered top-100
   search in the ID and the title collections (Qdrant Edge);
2. `OnlineRetriever` in process (features read included), over Qdrant Edge, and over qdrant-client's local mode
   (the engine Edge replaced: the baseline of the p99 target), with the same collections copied into it;
3. `fashionrec serve` started on 127.0.0.1 as a subprocess and driven over HTTP at concurrency 1 and 8, in
   `retrieval` mode, then the LLM modes (`llm`, `llm-rank`) over fewer requests with the workdir's adapter;
4. a malformed-request fuzz (default 1,000 requests): 5xx count, and whether the worker still answers.

Prints latency p50/p95/p99 and throughput per row, the p50/p99 ratio against the qdrant-client baseline, the mean
per-stage breakdown that responses report, and how many HTTP answers equal the in-process retriever's.

    python benchmarks/serving_latency.py --workdir /tmp/wmed [--requests 300] [--llm-requests 6] [--fuzz 1000]
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import pandas as pd
import typer

from feature_repo.store import FeatureRepo
from models.retrieval import RetrievalConfig
from serving.bundle import open_bundle
from serving.config import COLLECTIONS, Collections, Settings
from serving.recommend import OnlineRetriever, context_from_features
from serving.vectorstore import VectorStore

ROOT = Path(__file__).resolve().parents[1]


def _stats(label: str, ms: list[float], wall: float, extra: str = "") -> dict:
    a = np.asarray(ms)
    return {"row": label, "n": len(a), "p50": np.percentile(a, 50), "p95": np.percentile(a, 95),
            "p99": np.percentile(a, 99), "rps": len(a) / wall if wall > 0 else float("nan"), "note": extra}


def _users(root: Path, n: int, seed: int) -> list[str]:
    ev = pd.read_parquet(root / "canonical" / "events.parquet", columns=["user_id", "action"])
    acted = sorted(ev.loc[ev["action"].isin(["click", "purchase"]), "user_id"].unique())
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.choice(acted, size=min(n, len(acted)), replace=False)]


def _in_process(root: Path, store: VectorStore, repo: FeatureRepo, users: list[str], k: int
                ) -> tuple[list[float], dict[str, list[str]]]:
    retriever = open_bundle(root, Settings(workdir=root), with_llm=False, cfg=RetrievalConfig(k=100), store=store).retriever
    ms, answers = [], {}
    for u in users:
        t = time.perf_counter()
        ctx = context_from_features(repo.online([u]), items=retriever.items)
        answers[u] = retriever.recommend(ctx).items[:k]
        ms.append((time.perf_counter() - t) * 1e3)
    return ms, answers


def _client_local_copy(store: VectorStore, names: Collections) -> VectorStore:
    copy = VectorStore.client_local(":memory:")
    for name in (names.ids, names.titles, names.memory):
        ids, vecs, payloads = store.export(name)
        parts = [p.get("partition") for p in payloads]
        copy.upsert(name, ids, vecs, payloads, partitions=parts if all(parts) else None)
    return copy


def _drive(base: str, bodies: list[dict], concurrency: int, timeout: float) -> tuple[list[float], list[dict], float]:
    def one(body: dict) -> tuple[float, dict]:
        with httpx.Client(base_url=base, timeout=timeout) as c:
            t = time.perf_counter()
            r = c.post("/v1/recommendations", json=body)
            dt = (time.perf_counter() - t) * 1e3
        return dt, (r.json() if r.status_code == 200 else {"status": r.status_code, "detail": r.text[:200]})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, bodies))
    return [d for d, _ in out], [b for _, b in out], time.perf_counter() - t0


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
         requests: Annotated[int, typer.Option(help="Retrieval requests per row")] = 300,
         client_requests: Annotated[int, typer.Option(help="Requests through qdrant-client local (slow)")] = 60,
         llm_requests: Annotated[int, typer.Option(help="Requests per LLM mode (0: skip)")] = 6,
         llm_timeout: Annotated[float, typer.Option(help="LLM budget per request, s")] = 120.0,
         fuzz: Annotated[int, typer.Option(help="Malformed requests")] = 1000,
         k: Annotated[int, typer.Option(help="Items per answer")] = 10,
         port: Annotated[int, typer.Option(help="0: a free port")] = 0,
         seed: int = 0) -> None:
    import torch

    torch.set_num_threads(1)  # as the service does (FASHIONREC_TORCH_THREADS), so the in-process rows compare fairly
    root = workdir.resolve()
    users = _users(root, requests, seed)
    repo = FeatureRepo(root / "features", root / "feast")
    names = COLLECTIONS
    rows, notes = [], []

    # 1-2: raw calls and the framework in process (the embedded store is opened by one process at a time)
    with VectorStore.local(root / "qdrant") as store:
        retriever: OnlineRetriever = open_bundle(root, Settings(workdir=root), with_llm=False, cfg=RetrievalConfig(k=100), store=store).retriever
        feats, ctxs = [], []
        t0 = time.perf_counter()
        for u in list(users):
            t = time.perf_counter()
            f = repo.online([u])
            feats.append((time.perf_counter() - t) * 1e3)
            try:
                ctxs.append(context_from_features(f, items=retriever.items))
            except ValueError:  # the last 50 actions hold no click or purchase: no category to take
                users.remove(u)
        rows.append(_stats("raw: Feast online read (1 user)", feats, time.perf_counter() - t0))
        rng = np.random.default_rng(seed)
        searches = []
        t0 = time.perf_counter()
        for ctx in ctxs:
            vec_id = rng.normal(size=(1, _dim(store, names.ids))).astype(np.float32)
            vec_t = rng.normal(size=(1, _dim(store, names.titles))).astype(np.float32)
            t = time.perf_counter()
            store.search(names.ids, vec_id, 100, partition=ctx.category)
            store.search(names.titles, vec_t, 100, partition=ctx.category)
            searches.append((time.perf_counter() - t) * 1e3)
        rows.append(_stats("raw: Qdrant Edge ID + title top-100 (category filter)", searches,
                           time.perf_counter() - t0))
        t0 = time.perf_counter()
        ms, edge_answers = _in_process(root, store, repo, users, k)
        rows.append(_stats("in process: OnlineRetriever, Qdrant Edge", ms, time.perf_counter() - t0))
        t = time.perf_counter()
        client_store = _client_local_copy(store, names)
        notes.append(f"copied the collections into qdrant-client local mode in {time.perf_counter() - t:.1f} s")
    with client_store:
        t0 = time.perf_counter()
        ms, client_answers = _in_process(root, client_store, repo, users[:client_requests], k)
        rows.append(_stats("in process: OnlineRetriever, qdrant-client local (baseline)", ms,
                           time.perf_counter() - t0))
    same_engines = sum(client_answers[u] == edge_answers[u] for u in client_answers)
    notes.append(f"qdrant-client local vs Edge: {same_engines}/{len(client_answers)} identical answers")

    # 3: the HTTP service in its own process
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FASHIONREC_LLM_TIMEOUT_S": str(llm_timeout), "FASHIONREC_LOG_REQUESTS": "false"}
    if llm_requests == 0:
        env["FASHIONREC_LLM_ENABLED"] = "false"
    t = time.perf_counter()
    log = tempfile.NamedTemporaryFile("w+", prefix="fashionrec-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--workdir", str(root), "--port",
                             str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    notes.append(f"service log: {log.name}")
    try:
        ready = _wait_ready(base, proc, 600, Path(log.name))
        notes.append(f"service ready in {time.perf_counter() - t:.1f} s; readyz {json.dumps(ready)}")
        bodies = [{"user_id": u, "k": k} for u in users]
        _drive(base, bodies[:10], 1, 60)  # warm
        stages: dict[str, list[dict]] = {}
        http_answers: dict[str, list[str]] = {}
        for conc in (1, 8):
            ms, out, wall = _drive(base, bodies, conc, 60)
            bad = sum("items" not in o for o in out)
            rows.append(_stats(f"HTTP mode=retrieval, concurrency {conc}", ms, wall, f"{bad} errors" if bad else ""))
            stages[f"retrieval c={conc}"] = [o["timings_ms"] for o in out if "timings_ms" in o]
            if conc == 1:
                http_answers = {o["user_id"]: [i["item_id"] for i in o["items"]] for o in out if "items" in o}
        same = sum(http_answers.get(u) == edge_answers[u] for u in users)
        notes.append(f"HTTP retrieval vs OnlineRetriever in process: {same}/{len(users)} identical answers")
        if llm_requests:  # the LLM loads in the background: its modes fall back until it is in
            deadline, llm = time.monotonic() + 600, "loading"
            while time.monotonic() < deadline:
                llm = httpx.get(f"{base}/readyz", timeout=30).json().get("llm", "none")
                if llm != "loading":
                    break
                time.sleep(1.0)
            notes.append(f"LLM loaded {time.perf_counter() - t:.1f} s after start: {llm}")
        for mode in ("llm-rank", "llm") if llm_requests else ():
            ms, out, wall = _drive(base, [{"user_id": u, "k": k, "mode": mode} for u in users[:llm_requests]], 1,
                                   llm_timeout + 60)
            served = sum(o.get("mode") == mode for o in out)
            model = next((o["llm"]["model"] for o in out if o.get("llm")), "none")
            rows.append(_stats(f"HTTP mode={mode}, concurrency 1", ms, wall, f"{served}/{len(out)} served by "
                               f"{mode} ({model})"))
            stages[mode] = [o["timings_ms"] for o in out if "timings_ms" in o]
        fivexx, four, alive = _fuzz(base, fuzz, seed)
        notes.append(f"fuzz: {fuzz} malformed requests: {fivexx} 5xx, {four} 4xx; worker alive after: {alive}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    base_row = next(r for r in rows if "baseline" in r["row"])
    print(f"\nworkdir {root}; {len(users)} users, k={k}\n")
    print("| path | requests | p50 ms | p95 ms | p99 ms | req/s | p50 vs baseline | p99 vs baseline | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} "
              f"| {r['p50'] / base_row['p50']:.3f}x | {r['p99'] / base_row['p99']:.3f}x | {r['note']} |")
    print("\nmean ms per stage, as the responses report them:\n")
    keys = sorted({key for v in stages.values() for t in v for key in t})
    print("| rows | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, ts in stages.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([t.get(key, 0.0) for t in ts]):.1f}" for key in keys) + " |")
    print()
    for n in notes:
        print(f"- {n}")


def _dim(store: VectorStore, name: str) -> int:
    return int(store._backend.dim(name))


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
        time.sleep(0.5)
    raise TimeoutError("fashionrec serve did not become ready")


if __name__ == "__main__":
    typer.run(main)
