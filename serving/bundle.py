"""The serving bundle: everything a request reads, published as one registry version, updated per batch, opened once.

A bundle version is self-contained. It is laid out like a workdir (`feature_repo.layout.Layout`), so the service
opens either one the same way, and it holds:
- the catalog (`canonical/items.parquet`);
- the ID checkpoint, the title model, the variant ranker, the learned ranker and the LLM adapter (`models/`);
- every item's title vector (`text/title_vectors.npy`, the evaluation's file), which serving reads instead of
  encoding titles per request, and scans for the title list (`title_table`);
- what the ranking stage reads at request time: the search log (`canonical/search_results.parquet`) and the
  activity windows (`features/activity_windows.parquet`);
- the all-time best sellers per category, for shoppers with neither history nor query (`serving/popularity.json`);
- the three vector collections (`qdrant/`, Qdrant Edge), or, with a Qdrant server, their names in the manifest.
So a rollback serves exactly what that version served. Only the users' sequences are live: they come from the
Feast online store at request time.

`publish_bundle` copies a workdir's artefacts after a full run (the `serving_bundle` asset). `update_bundle`
derives a new version from the current one for an ingested batch, without retraining: the new items' titles are
embedded with the bundle's title model into the title collection (the ID collection holds only the items the ID
model has a row for, so it does not change), the query memory is rebuilt from every search so far, and the search log, activity windows and best sellers are the
workdir's after the batch. `open_bundle` loads one version for serving (`serving.service`, `fashionrec recommend`).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.layout import Layout
from feature_repo.schema import TABLES, CanonicalTables
from models.llm.prompt import CatalogItems
from models.retrieval import RetrievalConfig
from models.seqrec import ID_MODEL
from serving.config import COLLECTIONS, Collections, Settings
from serving.llm_runtime import LLMRuntime, adapter_key, load_llm_runtime
from serving.recommend import OnlineRetriever
from serving.registry import SERVING, Registry, Version, file_digest
from serving.vectorstore import VectorStore

logger = logging.getLogger(__name__)
LIST_K = 100  # every request ranks a 100-item list and returns its first k (the evaluation's list length)
TOP_CATEGORIES = "\x00categories"  # the popularity table's key for categories by purchases (not a category name)


def _copied(layout: Layout, id_model: str) -> list[Path]:
    """What a bundle copies from a workdir (absent ones are skipped, except the three it needs)."""
    return [layout.items, layout.search_results, layout.activity, layout.model(id_model), layout.title_model,
            layout.title_vectors, layout.variant_ranker, layout.ranker, layout.ranker_llm, layout.llm_adapter, layout.llm_engine]


def _required(layout: Layout, id_model: str) -> list[Path]:
    return [layout.items, layout.model(id_model), layout.title_model]


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


def popularity_table(events: pd.DataFrame, items: pd.DataFrame) -> dict[str, list[str]]:
    """Per category, items by purchase count (then clicks, then id); `TOP_CATEGORIES` lists categories by purchases."""
    counts = pd.Series(0.0, index=items["item_id"].to_numpy())
    ev = events[events["item_id"].notna()]
    weight = np.where(ev["action"].to_numpy() == "purchase", 1.0, 1e-3)  # clicks break purchase ties
    counts = counts.add(pd.Series(weight, index=ev["item_id"].to_numpy()).groupby(level=0).sum(), fill_value=0)
    df = items[["item_id", "category"]].assign(n=counts.reindex(items["item_id"].to_numpy()).fillna(0).to_numpy())
    df = df.sort_values(["n", "item_id"], ascending=[False, True], kind="stable")
    out = {str(c): g["item_id"].head(LIST_K * 2).astype(str).tolist() for c, g in df.groupby("category", sort=True)}
    out[TOP_CATEGORIES] = df.groupby("category")["n"].sum().sort_values(ascending=False, kind="stable").index.astype(
        str).tolist()
    return out


def _write_popularity(workdir: Layout, bundle: Layout) -> None:
    events = pd.read_parquet(workdir.events, columns=["action", "item_id"]) if workdir.events.exists() else \
        pd.DataFrame({"action": [], "item_id": []})
    table = popularity_table(events, workdir.read_items())
    Layout.ensure(bundle.popularity).write_text(json.dumps(table))


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def publish_bundle(workdir: Path, id_model: str = ID_MODEL, reason: str = "full run",
                   collections: Collections = COLLECTIONS) -> Version:
    """Copy the workdir's serving artefacts into a new registry version and make it current."""
    wd = Layout(Path(workdir))
    if missing := [str(p.relative_to(wd.root)) for p in _required(wd, id_model) if not p.exists()]:
        raise FileNotFoundError(f"{wd.root} lacks {missing}: run `fashionrec run --workdir {wd.root}` first")
    reg = Registry.of(wd.root)
    version, staging = reg.stage(SERVING)
    bundle = Layout(staging)
    artefacts = {}
    for src in _copied(wd, id_model):
        if src.exists():
            rel = src.relative_to(wd.root)
            _copy(src, staging / rel)
            artefacts[str(rel)] = file_digest(src)
    for name in collections.names():
        src = wd.qdrant / name
        if src.exists():
            shutil.copytree(src, bundle.qdrant / name, ignore=shutil.ignore_patterns("*.lock"))
            artefacts[f"qdrant/{name}"] = "copied"
    _write_popularity(wd, bundle)
    return reg.commit(SERVING, version, staging, {
        "kind": "full", "reason": reason, "parent": None, "id_model": id_model, "artefacts": artefacts,
        "collections": dict(zip(("ids", "titles", "memory"), collections.names(), strict=True)),
        "data": data_snapshot(wd.canonical), "metrics": _metrics(wd.eval)})


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


def _extend_title_table(bundle: Layout, parent_items: pd.Series, fresh: pd.DataFrame, vectors: np.ndarray) -> None:
    """Write the bundle's title table (`text/title_vectors.npy`, catalog order) for its catalog after a batch: the
    parent's rows as they were, the new items' rows from `vectors`. A parent without a table (published before
    bundles held one) leaves none, and `open_bundle` encodes the catalog instead."""
    path = bundle.title_vectors
    if not path.exists():
        return
    old = np.load(path)  # (n_parent, d) in the parent's catalog order
    if len(old) != len(parent_items):
        path.unlink()
        return
    ids = np.concatenate([np.sort(parent_items.astype(str).to_numpy()), fresh["item_id"].astype(str).to_numpy()])
    table = np.concatenate([old, np.asarray(vectors, old.dtype).reshape(len(fresh), old.shape[1])])
    np.save(path, table[np.argsort(ids, kind="stable")])


def bundle_has_batch(version: Version | None, batch: str) -> bool:
    """Whether a bundle version was published with `batch` already applied to its data."""
    return version is not None and batch in version.manifest.get("data", {}).get("batches", [])


def update_bundle(workdir: Path, batch: str, id_model: str = ID_MODEL,
                  collections: Collections = COLLECTIONS) -> tuple[Version, dict]:
    """A new bundle version for a batch already in the canonical tables (see the module docstring).

    The new items are those of the workdir's catalog that the parent bundle's catalog lacks, so a batch whose
    publication was interrupted is completed by the next call, exactly once."""
    from models.seqrec import load_checkpoint
    from models.text import embed_catalog, load_title_model
    from serving.id_index import write_id_embeddings

    wd = Layout(Path(workdir))
    reg = Registry.of(wd.root)
    parent = reg.current(SERVING) or publish_bundle(wd.root, id_model, reason="first bundle, before a batch")
    t0 = time.perf_counter()
    version, staging = reg.stage(SERVING, parent=parent)
    bundle = Layout(staging)
    parent_items = pd.read_parquet(bundle.items, columns=["item_id"])["item_id"]
    known = set(parent_items)
    tables = CanonicalTables.read(wd.canonical)
    for src in (wd.items, wd.search_results, wd.activity):  # the data as of after the batch
        if src.exists():
            _copy(src, staging / src.relative_to(wd.root))
    _write_popularity(wd, bundle)
    fresh = tables.items[~tables.items["item_id"].isin(known)].reset_index(drop=True)
    encoder = load_title_model(bundle.title_model)
    ckpt = load_checkpoint(bundle.model(id_model))
    timings: dict[str, float] = {"copy": round(time.perf_counter() - t0, 3)}
    with VectorStore.local(bundle.qdrant) as store:
        t = time.perf_counter()
        vectors = embed_catalog(encoder, fresh) if len(fresh) else np.zeros((0, encoder.dim), np.float32)  # (n_new, d)
        _extend_title_table(bundle, parent_items, fresh, vectors)
        if len(fresh):
            payloads = [{"item_id": i, "category": c, "title": ti}
                        for i, c, ti in zip(fresh["item_id"], fresh["category"], fresh["title"], strict=True)]
            store.upsert(collections.titles, list(fresh["item_id"]), vectors, payloads,
                         partitions=list(fresh["category"]))
            # Items the ID model has a row for but the parent's catalog lacked (none after a full run) get it.
            write_id_embeddings(store, collections.ids, ckpt.model, ckpt.vocab, fresh)
        timings["new_items"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        memory, n_memory = write_query_memory(store, collections.memory, tables.search_results, tables.events,
                                              encoder)
        timings["memory"] = round(time.perf_counter() - t, 3)
    out = reg.commit(SERVING, version, staging, {
        "kind": "incremental", "reason": f"batch {batch}", "parent": parent.version, "id_model": id_model,
        "collections": parent.manifest.get("collections", {}),
        "new_items": len(fresh), "memory_queries": n_memory, "built_before": str(memory.built_before),
        "data": data_snapshot(wd.canonical), "metrics": parent.manifest.get("metrics", {}),
        "timings_s": timings})
    return out, timings


# -- opening a bundle -----------------------------------------------------------------------------------


@dataclass
class Bundle:
    """One consistent set of what a request reads, opened from one bundle version (or a workdir).

    The service swaps the whole bundle when the registry's pointer moves; requests in flight keep the bundle they
    started with, and an old one closes once its last request is done (`refs`, `retired`).
    """

    root: Path  # the bundle version's folder (or the workdir itself before anything is published)
    version: str  # the bundle's version, or "workdir"
    retriever: OnlineRetriever
    store: VectorStore
    id_model: Any  # models.seqrec.Checkpoint
    models: dict[str, str]  # component -> version (content hashes), reported in every answer
    popularity: dict[str, list[str]]
    llm: LLMRuntime | None = None
    llm_error: str | None = None
    second_pass: Any = None  # models.ranker.model.LearnedRanker: ranker-llm's pass over the LLM's letter scores
    llm_loader: threading.Thread | None = None  # the background load, while it runs (`Settings.llm_background`)
    ranker_engine: str = "none"  # what scores the ranking stage: lleaves (compiled), lightgbm, or compiling
    ranker_compiler: threading.Thread | None = None  # the background compile, while it runs
    refs: int = 0
    retired: bool = False
    warm_ms: float | None = None  # how long the service's warm-up took on this bundle; None: not warmed yet
    # Where `reopen_store` opens the collections again: the embedded engine's folder, or a server's URL (None: the
    # caller gave the store, and only it can).
    store_source: Path | str | None = None
    # In a forked worker: the bundle reads no collection at request time (`reads_no_collection`), so the worker
    # left its store closed rather than open a private copy of the shards (`RecommendationService.attach`)
    collections_in_memory: bool = False
    items: pd.DataFrame = field(init=False)
    categories: set[str] = field(init=False)
    created_ns: pd.Series = field(init=False)
    # What an answer shows of an item, by the retriever's rows: field -> (n,) object array, None where missing
    item_fields: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        items = self.retriever.items
        self.items = items.set_index("item_id", drop=False)
        self.item_fields = {k: (items[k].astype(object).where(items[k].notna(), None).to_numpy(object)
                                if k in items else np.full(len(items), None, object))
                            for k in ("title", "brand", "color", "size")}
        self.item_fields["category"] = items["category"].to_numpy(object)
        self.categories = set(self.items["category"].astype(str))
        self.created_ns = pd.Series(self.retriever.created_ns, index=items["item_id"].to_numpy())

    @cached_property
    def catalog_items(self) -> CatalogItems:
        """The items' attributes as the LLM's prompts read them (built on the first LLM request: 3 s on medium-s0,
        which retrieval traffic never pays)."""
        return CatalogItems(self.retriever.items)

    def popular(self, category: str, at: pd.Timestamp) -> list[str]:
        """The category's most bought items, released by `at`."""
        return [i for i in self.popularity.get(category, []) if self.created_ns.get(i, 0) <= at.value][:LIST_K]

    @property
    def llm_loading(self) -> bool:
        return self.llm_loader is not None and self.llm_loader.is_alive()

    def llm_status(self) -> str:
        """The LLM's version when loaded, "loading" while the background load runs, else why it is not loaded."""
        if self.llm is not None:
            return self.llm.version
        return "loading" if self.llm_loading else f"not loaded ({self.llm_error})"

    def wait_for_llm(self, timeout: float | None = None) -> bool:
        """Block until a background LLM load is done (or `timeout` seconds); whether the LLM is loaded."""
        if self.llm_loader is not None:
            self.llm_loader.join(timeout)
        return self.llm is not None

    def close(self) -> None:
        self.store.close()

    @property
    def reads_no_collection(self) -> bool:
        """Whether requests read nothing from the collections: the ID and title lists are scans of the bundle's
        tables and the memory's table is already read (`OnlineRetriever.scan`, the embedded engine's default)."""
        return bool(self.retriever.scan) and self.retriever.memory_read

    def reopen_store(self, settings: Settings) -> None:
        """This process's own connection to the bundle's collections, in place of the one it was opened with (which
        must be closed first): what a worker forked from the process that loaded the bundle does
        (`serving.prefork`). An embedded store becomes a private copy of the shards (a shard opens in one process
        at a time); a server gets a new client."""
        if isinstance(self.store_source, Path):
            store = VectorStore.private_copy(self.store_source)
        elif self.store_source:
            store = VectorStore.remote(self.store_source, settings.api_key)
        else:
            raise RuntimeError(f"bundle {self.version}: its vector store was given by the caller and cannot be reopened")
        self.store = self.retriever.store = store

    @property
    def ranking_model(self) -> Any:
        """The ranking stage's `LearnedRanker` with boosters, or None."""
        stage = self.retriever.ranking
        model = stage.ranker if stage is not None else None
        return model if model is not None and model.boosters else None


def compile_ranker_for(bundle: Bundle, how: str) -> None:
    """`_compile_ranker` on the bundle's own ranking model, when it has one and LightGBM still scores it."""
    if bundle.ranking_model is not None and bundle.ranker_engine.startswith("lightgbm"):
        _compile_ranker(bundle, bundle.ranking_model, how)


def _compile_ranker(bundle: Bundle, ranker: Any, how: str) -> None:
    """Score the bundle's ranking stage with the compiled bag (`models.ranker.compiled`): now when its code is
    cached or `how` is "wait", else in a thread while LightGBM's predict serves (the same scores either way)."""
    from models.ranker.compiled import is_cached

    def run() -> None:
        try:
            bag = ranker.compile()
            how_ = "cached" if bag.cached == len(bag.models) else "compiled"
            bundle.ranker_engine = f"lleaves ({len(bag.models)} boosters, {how_} in {bag.seconds:.1f} s)"
        except Exception as e:  # noqa: BLE001 - LightGBM's predict still serves, with the same scores
            logger.warning("could not compile the ranker (%s); LightGBM's predict serves", e)
            bundle.ranker_engine = f"lightgbm (compile failed: {type(e).__name__}: {e})"

    bundle.ranker_engine = "lightgbm"
    if how == "off":
        return
    if how == "wait" or is_cached(ranker.boosters):
        run()
        return
    bundle.ranker_engine = "lightgbm (compiling in the background)"
    bundle.ranker_compiler = threading.Thread(target=run, daemon=True, name=f"ranker-compile-{bundle.version}")
    bundle.ranker_compiler.start()


_LLM_LOAD = threading.Lock()  # one LLM load at a time: a swap during a background load then finds it in the cache


def _load_llm(bundle: Bundle, settings: Settings, lay: Layout, cache: dict[str, LLMRuntime]) -> None:
    """Load the bundle's LLM into it (`load_llm_runtime`); what a request sees changes only when it is done."""
    with _LLM_LOAD:
        llm, error = load_llm_runtime(settings, lay, bundle.id_model, cache)
    if llm is not None:
        bundle.models = {**bundle.models, "llm": llm.version}  # a new dict: a request may be reading the old one
    bundle.llm_error, bundle.llm = error, llm


def open_bundle(root: Path, settings: Settings, version: str = "workdir", llm_cache: dict[str, LLMRuntime] | None = None,
                cfg: RetrievalConfig | None = None, with_llm: bool | None = None, store: VectorStore | None = None
                ) -> Bundle:
    """Open a bundle version (or a workdir) for serving: catalog, models, ranking stage, collections, best sellers
    and, when `settings.llm_enabled` (or `with_llm`) and the bundle has an adapter, the LLM. `store`: an open
    vector store to search instead of the bundle's own (the caller closes it)."""
    from models.seqrec import load_checkpoint
    from models.seqrec.vectors import known_item_vectors, query_vectors
    from models.text import load_title_model
    from models.variants import VariantRanker

    lay = Layout(root)
    if missing := [str(p) for p in _required(lay, settings.id_model) if not p.exists()]:
        raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: run `fashionrec run --workdir "
                                f"{settings.workdir}` first")
    ckpt = load_checkpoint(lay.model(settings.id_model))
    variants = VariantRanker.load(lay.variant_ranker) if lay.variant_ranker.exists() else None
    items = lay.read_items().sort_values("item_id", kind="stable").reset_index(drop=True)  # the serving row order
    encoder = load_title_model(lay.title_model)
    titles = title_table(lay, items, encoder)
    source: Path | str | None = None
    if store is not None:
        pass
    elif settings.qdrant_url:
        store, source = VectorStore.remote(settings.qdrant_url, settings.api_key), settings.qdrant_url
    else:  # a published bundle holds its own collections; the workdir's are where the settings say
        source = Path(settings.qdrant_path if version == "workdir" and settings.qdrant_path else lay.qdrant)
        # Several workers: each searches its own copy (an Edge shard opens in one process at a time).
        store = VectorStore.private_copy(source) if settings.workers > 1 else VectorStore.local(source)
    cfg = cfg or RetrievalConfig(mode=settings.retrieval_mode, k=LIST_K, n=settings.mixup_n)  # type: ignore[arg-type]
    id_table = known_item_vectors(ckpt.model, ckpt.vocab, items["item_id"].to_numpy())  # (n, d), NaN: no row
    id_table.setflags(write=False)
    stage, stage_version = (load_ranking_stage(lay, items, id_table, titles) if settings.ranker_enabled
                            else (None, "off (FASHIONREC_RANKER_ENABLED=0)"))
    retriever = OnlineRetriever(store, items, encoder, lambda h: query_vectors(ckpt.model, ckpt.vocab, h), variants,
                                cfg, collections=settings.collections, id_items=ckpt.vocab.to_list(), ranking=stage,
                                title_vectors=titles, id_vectors=id_table,
                                scan=settings.table_search and store.engine == "qdrant-edge")
    models = {"bundle": version, "id_model": f"{settings.id_model}@{file_digest(lay.model(settings.id_model))}",
              "title_model": f"lstm-title@{file_digest(lay.title_model)}",
              "variant_ranker": f"variant-ranker@{file_digest(lay.variant_ranker)}" if variants else "none",
              "ranker": stage_version, "vector_engine": store.engine,
              "online_store": "redis" if settings.online_store.startswith("redis") else "sqlite"}
    if lay.popularity.exists():
        popularity = json.loads(lay.popularity.read_text())
    else:  # a workdir before any publish: from its events
        events = pd.read_parquet(lay.events, columns=["action", "item_id"]) if lay.events.exists() else \
            pd.DataFrame({"action": [], "item_id": []})
        popularity = popularity_table(events, items)
    second = None
    if stage is not None and (lay.ranker_llm / "ranker.json").exists():
        from models.ranker.model import LearnedRanker

        second = LearnedRanker.load(lay.ranker_llm)
        models["ranker_llm"] = f"lambdamart@{file_digest(lay.ranker_llm)}"
    bundle = Bundle(Path(root), version, retriever, store, ckpt, models, popularity, second_pass=second,
                    store_source=source)
    if bundle.ranking_model is not None:
        _compile_ranker(bundle, bundle.ranking_model, settings.ranker_compile)
    if settings.llm_enabled if with_llm is None else with_llm:
        start_llm(bundle, settings, llm_cache if llm_cache is not None else {})
    return bundle


def start_llm(bundle: Bundle, settings: Settings, cache: dict[str, LLMRuntime]) -> None:
    """Load the bundle's LLM: in a thread when `settings.llm_background` (retrieval is served meanwhile; the LLM
    modes fall back with this reason until it is loaded), else now."""
    lay = Layout(bundle.root)
    if (settings.llm_background and (lay.llm_adapter / "llm_meta.json").exists()
            and adapter_key(settings, lay) not in cache):
        bundle.llm_error = "loading in the background"
        bundle.llm_loader = threading.Thread(target=_load_llm, args=(bundle, settings, lay, cache), daemon=True,
                                             name=f"llm-load-{bundle.version}")
        bundle.llm_loader.start()
    else:
        _load_llm(bundle, settings, lay, cache)


def title_table(lay: Layout, items: pd.DataFrame, encoder: Any) -> np.ndarray:
    """Every catalog item's unit title vector, in the order of `items` (sorted by id), read-only: the bundle's
    `text/title_vectors.npy`, the very file the evaluation reads, so that serving's title features and memory blend
    are the evaluation's floats. A bundle or workdir without a table that fits its catalog has its catalog encoded
    here, once, with the function that writes the table (`embed_catalog`)."""
    from models.common import l2_normalize
    from models.text import embed_catalog

    n = len(items)
    table = np.load(lay.title_vectors) if lay.title_vectors.exists() else None
    if table is None or table.shape != (n, encoder.dim):
        why = "none" if table is None else f"shape {table.shape}, catalog {n} x {encoder.dim}"
        logger.warning("%s: no title table fits the catalog (%s); encoding %d titles", lay.root, why, n)
        table = embed_catalog(encoder, items)
    table = np.ascontiguousarray(l2_normalize(table), np.float32)
    table.setflags(write=False)
    return table


def load_ranking_stage(lay: Layout, items: pd.DataFrame, id_table: np.ndarray, titles: np.ndarray
                       ) -> tuple[Any, str]:
    """The learned ranking stage of a bundle (None and why when it has none): its ranker, the catalog's features,
    and the bundle's own activity windows and search log. `items` sorted by id (serving's row order); `id_table`,
    `titles`: their unit ID vectors (NaN: none) and title vectors, in that order."""
    from feature_repo.activity import ActivityTable
    from models.ranker.candidates import SearchLog
    from models.ranker.features import FeatureContext
    from models.ranker.model import LearnedRanker
    from models.ranker.stage import RankingStage
    from models.variants import ItemAttributes

    needed = [lay.ranker / "ranker.json", lay.activity, lay.search_results]
    if missing := [str(p) for p in needed if not p.exists()]:
        return None, f"none (missing {', '.join(missing)})"
    ctx = FeatureContext(ItemAttributes.from_items(items), items, ActivityTable.read(lay.activity),
                         id_vectors=lambda rows: id_table[rows], title_vectors=lambda rows: titles[rows])
    search_log = SearchLog(pd.read_parquet(lay.search_results, columns=["search_id", "item_id", "position"]),
                           pd.Index(items["item_id"]))
    return RankingStage(ctx, search_log, LearnedRanker.load(lay.ranker)), f"lambdamart@{file_digest(lay.ranker)}"


def open_current(settings: Settings, llm_cache: dict[str, LLMRuntime] | None = None, **kwargs: Any) -> Bundle:
    """`open_bundle` on the registry's current serving bundle, or on the workdir before anything is published."""
    workdir = Layout(Path(settings.workdir).resolve())
    current = Registry(workdir.registry).current(SERVING)
    if current is None:
        return open_bundle(workdir.root, settings, "workdir", llm_cache, **kwargs)
    return open_bundle(current.path, settings, current.version, llm_cache, **kwargs)
