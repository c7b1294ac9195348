"""The serving bundle: publish what `fashionrec serve` reads as one registry version, and update it for a batch.

Layout of a bundle (the same as a workdir's, so the service opens either): `canonical/items.parquet`,
`models/<id_model>.pt`, `models/title/`, `models/variant_ranker.json`, `models/ranker/`, `models/llm_adapter/`, and `qdrant/` with the
three collections (Qdrant Edge). `publish_bundle` copies them out of a workdir after a full run (the
`serving_bundle` asset). `update_bundle` derives a new version from the current one for an ingested batch, without
any retraining: the new items' titles are embedded with the bundle's title model and upserted into the title
collection, the new items get the ID model's cold vector in the ID collection, and the query memory is rebuilt from
every search so far. Serving swaps to it on its next request (see `serving.service`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.schema import TABLES, CanonicalTables
from serving.registry import SERVING, Registry, Version, file_digest
from serving.vectorstore import VectorStore

ID_COLLECTION, TITLE_COLLECTION, MEMORY_COLLECTION = "item_id_embeddings", "item_title_embeddings", "query_memory"
COLLECTIONS = (ID_COLLECTION, TITLE_COLLECTION, MEMORY_COLLECTION)


def _paths(id_model: str) -> list[str]:
    return ["canonical/items.parquet", f"models/{id_model}.pt", "models/title", "models/variant_ranker.json",
            "models/ranker", "models/llm_adapter"]


def data_snapshot(canonical: Path) -> dict[str, Any]:
    """Row counts and content hashes of the canonical tables, and the batches applied so far."""
    import pyarrow.parquet as pq

    from feature_repo.incremental import applied

    out: dict[str, Any] = {}
    for name in TABLES:
        path = canonical / f"{name}.parquet"
        if path.exists():
            out[name] = {"rows": pq.ParquetFile(path).metadata.num_rows, "sha256_12": file_digest(path)}
    out["batches"] = [b["name"] for b in applied(canonical)]
    return out


def _metrics(eval_dir: Path) -> dict[str, float]:
    out = {}
    for p in sorted(eval_dir.glob("*/metrics.json")) if eval_dir.exists() else []:
        try:
            out[p.parent.name] = round(float(json.loads(p.read_text())["overall"]["ndcg@10"]), 4)
        except (KeyError, ValueError, TypeError):
            continue
    return out


def publish_bundle(workdir: Path, id_model: str = "core-trm", reason: str = "full run") -> Version:
    """Copy the workdir's serving artefacts into a new registry version and make it current."""
    workdir = Path(workdir)
    reg = Registry.of(workdir)
    version, staging = reg.stage(SERVING)
    artefacts = {}
    for rel in _paths(id_model):
        src = workdir / rel
        if not src.exists():
            continue
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        artefacts[rel] = file_digest(src)
    for name in COLLECTIONS:
        src = workdir / "qdrant" / name
        if src.exists():
            shutil.copytree(src, staging / "qdrant" / name, ignore=shutil.ignore_patterns("*.lock"))
            artefacts[f"qdrant/{name}"] = "copied"
    missing = [r for r in ("canonical/items.parquet", f"models/{id_model}.pt", "models/title") if r not in artefacts]
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise FileNotFoundError(f"{workdir} lacks {missing}: run `fashionrec run --workdir {workdir}` first")
    return reg.commit(SERVING, version, staging, {
        "kind": "full", "reason": reason, "parent": None, "id_model": id_model, "artefacts": artefacts,
        "data": data_snapshot(workdir / "canonical"), "metrics": _metrics(workdir / "eval")})


def write_query_memory(store: VectorStore, name: str, search_results: pd.DataFrame, events: pd.DataFrame,
                       encoder: Any) -> tuple[Any, int]:
    """Rebuild the memory collection from every search so far (serving's memory as of now)."""
    from models.text import build_query_memory

    last = search_results["timestamp"].max() if len(search_results) else events["timestamp"].max()
    memory = build_query_memory(search_results, last + pd.Timedelta(milliseconds=1), encoder)
    points = memory.to_points()
    store.drop(name)  # rebuilt whole: no stale query survives
    n = store.upsert(name, [p["payload"]["query"] for p in points],
                     np.array([p["vector"] for p in points], np.float32).reshape(len(points), -1),
                     [p["payload"] for p in points]) if points else 0
    return memory, n


def update_bundle(workdir: Path, new_items: list[str], batch: str, id_model: str = "core-trm") -> tuple[Version, dict]:
    """A new bundle version for a batch: new items in the title and ID collections, the memory rebuilt."""
    from models.seqrec import load_checkpoint
    from models.text import embed_catalog, load_title_model
    from serving.id_index import write_id_embeddings

    workdir = Path(workdir)
    reg = Registry.of(workdir)
    parent = reg.current(SERVING) or publish_bundle(workdir, id_model, reason="first bundle, before a batch")
    t0 = time.perf_counter()
    version, staging = reg.stage(SERVING, parent=parent)
    tables = CanonicalTables.read(workdir / "canonical")
    shutil.copy2(workdir / "canonical" / "items.parquet", staging / "canonical" / "items.parquet")
    items = tables.items.set_index("item_id", drop=False)
    fresh = items.loc[[i for i in new_items if i in items.index]].reset_index(drop=True)
    encoder = load_title_model(staging / "models" / "title")
    ckpt = load_checkpoint(staging / "models" / f"{id_model}.pt")
    timings: dict[str, float] = {"copy": round(time.perf_counter() - t0, 3)}
    with VectorStore.local(staging / "qdrant") as store:
        t = time.perf_counter()
        if len(fresh):
            vectors = embed_catalog(encoder, fresh)  # (n_new, d)
            payloads = [{"item_id": i, "category": c, "title": ti}
                        for i, c, ti in zip(fresh["item_id"], fresh["category"], fresh["title"], strict=True)]
            store.upsert(TITLE_COLLECTION, list(fresh["item_id"]), vectors, payloads,
                         partitions=list(fresh["category"]))
            write_id_embeddings(store, ID_COLLECTION, ckpt.model, ckpt.vocab, fresh)  # unknown ids: the cold vector
        timings["new_items"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        memory, n_memory = write_query_memory(store, MEMORY_COLLECTION, tables.search_results, tables.events, encoder)
        timings["memory"] = round(time.perf_counter() - t, 3)
    out = reg.commit(SERVING, version, staging, {
        "kind": "incremental", "reason": f"batch {batch}", "parent": parent.version, "id_model": id_model,
        "new_items": len(fresh), "memory_queries": n_memory, "built_before": str(memory.built_before),
        "data": data_snapshot(workdir / "canonical"), "metrics": parent.manifest.get("metrics", {}),
        "timings_s": timings})
    return out, timings


def load_ranking_stage(root: Path, workdir: Path, items: pd.DataFrame, ckpt: Any, encoder: Any
                       ) -> tuple[Any, str]:
    """The learned ranking stage of a bundle (None and why when it has none): its ranker, the catalog's features,
    the activity windows and the search log (the workdir's, like the popularity fallback)."""
    from feature_repo.activity import ActivityTable
    from models.common import l2_normalize
    from models.ranker.candidates import SearchLog
    from models.ranker.features import FeatureContext
    from models.ranker.model import LearnedRanker
    from models.ranker.stage import RankingStage
    from models.seqrec.vectors import item_vectors
    from models.variants import ItemAttributes
    from serving.registry import file_digest

    model_dir = root / "models" / "ranker"
    needed = [model_dir / "ranker.json", workdir / "features" / "activity_windows.parquet",
              workdir / "canonical" / "search_results.parquet"]
    if missing := [str(p) for p in needed if not p.exists()]:
        return None, f"none (missing {', '.join(missing)})"
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)  # OnlineRetriever's row order
    id_table = l2_normalize(item_vectors(ckpt.model, ckpt.vocab, items["item_id"].to_numpy()))  # (n, d)
    titles = items["title"].fillna("").astype(str).to_numpy()
    cache: dict[int, np.ndarray] = {}

    def title_vectors(rows: np.ndarray) -> np.ndarray:
        todo = [r for r in dict.fromkeys(rows.tolist()) if r not in cache]
        if todo:
            cache.update(zip(todo, l2_normalize(encoder.encode(list(titles[todo]))), strict=True))
        return np.stack([cache[r] for r in rows.tolist()]) if len(rows) else np.zeros((0, encoder.dim), np.float32)

    ctx = FeatureContext(ItemAttributes.from_items(items), items, ActivityTable.read(needed[1]),
                         id_vectors=lambda rows: id_table[rows], title_vectors=title_vectors)
    search_log = SearchLog(pd.read_parquet(needed[2], columns=["search_id", "item_id", "position"]),
                           pd.Index(items["item_id"]))
    return RankingStage(ctx, search_log, LearnedRanker.load(model_dir)), f"lambdamart@{file_digest(model_dir)}"
