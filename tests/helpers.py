"""Fixtures shared by several test modules: a small catalog with searches, a stand-in ID model and store, the
evaluation's ranking stage over such tables, the app running under uvicorn, and an H&M-format day-basket dataset."""

from __future__ import annotations

import csv
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import uvicorn

from evaluation.ranking import RankerScorer
from evaluation.retrieval import RetrievalScorer, TitleQueryBuilder
from feature_repo.activity import ActivityTable
from models.catalog import Catalog
from models.common import l2_normalize
from models.ranker.candidates import CandidateConfig, SearchLog
from models.ranker.features import FeatureContext
from models.ranker.stage import RankingStage
from models.text import HashingNgramEncoder, embed_catalog
from models.text.memory import AsOfMemory
from models.variants import ItemAttributes
from serving.app import create_app
from serving.config import Settings
from serving.service import RecommendationService
from serving.vectorstore import VectorStore

# -- a small catalog: 2 categories x 4 families x 3 colours x 3 sizes, and 30 searches -----------------------------

T0 = pd.Timestamp("2024-03-01", tz="UTC")


COLOURS, SIZES = ["red", "blue", "black"], ["7", "8", "9"]


KINDS = {"Footwear": ["sneaker", "boot", "sandal", "loafer"], "Clothing": ["dress", "shirt", "jeans", "coat"]}


def catalog_items() -> pd.DataFrame:
    rows = []
    for cat, kinds in KINDS.items():
        for f, kind in enumerate(kinds):
            for c in COLOURS:
                for s in SIZES:
                    rows.append({"item_id": f"{cat[0]}{f}-{c}-{s}", "family_id": f"{cat}{f}", "category": cat,
                                 "subcategory": kind, "color": c, "size": s, "created_at": T0 - pd.Timedelta(days=30),
                                 "title": f"{c} {kind} size {s} brand{f}"})
    return pd.DataFrame(rows)


def search_results(items: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    queries = ["red sneakers", "black boots", "blue dress", "summer sandals", "denim jeans", "warm coat"]
    rows = []
    for sid in range(30):
        q = queries[sid % len(queries)]
        shown = rng.choice(items["item_id"].to_numpy(), size=6, replace=False)
        rows += [{"search_id": sid, "user_id": f"u{sid}", "session_id": sid, "query": q,
                  "timestamp": T0 - pd.Timedelta(days=20 - sid * 0.1), "item_id": i, "position": p}
                 for p, i in enumerate(shown, start=1)]
    return pd.DataFrame(rows)


def id_model_and_store(catalog: Catalog, id_vecs: np.ndarray, title_vecs: np.ndarray
                       ) -> tuple[Callable[[list[list[str]]], np.ndarray], VectorStore]:
    """A stand-in ID model (a history's query is the mean of its items' vectors) and an in-memory store holding
    the ID and title collections, partitioned by category."""
    id_of = dict(zip(catalog.item_ids, id_vecs, strict=True))

    def id_queries(histories: list[list[str]]) -> np.ndarray:  # mean of the history's ID vectors
        return np.stack([np.mean([id_of[i] for i in h], axis=0) if h else np.zeros(id_vecs.shape[1])
                         for h in histories])

    store = VectorStore.memory()
    store.upsert("item_id_embeddings", list(catalog.item_ids), id_vecs, partitions=list(catalog.items["category"]))
    store.upsert("item_title_embeddings", list(catalog.item_ids), title_vecs,
                 partitions=list(catalog.items["category"]))
    return id_queries, store


def make_scorer(items: pd.DataFrame, ev: pd.DataFrame, sr: pd.DataFrame, encoder: HashingNgramEncoder,
                cfg: CandidateConfig) -> tuple[Catalog, RankerScorer, VectorStore, object, AsOfMemory]:
    """The evaluation's ranking stage over these tables (ID vectors seeded per item id, titles hashed)."""
    catalog = Catalog.from_items(items)
    title_vecs = embed_catalog(encoder, catalog.items)  # (n, d) catalog order
    id_vecs = np.stack([np.random.default_rng(zlib.crc32(i.encode())).normal(size=8)
                        for i in catalog.item_ids]).astype(np.float32)  # (n, 8) the same per item in any catalog
    id_queries, store = id_model_and_store(catalog, id_vecs, title_vecs)
    memory = AsOfMemory.build(sr, encoder)
    titles = TitleQueryBuilder(encoder, memory, catalog, title_vecs)
    base = RetrievalScorer(catalog, id_vecs, title_vecs, id_queries, titles.queries)
    unit_id, unit_title = l2_normalize(id_vecs), l2_normalize(title_vecs)
    ctx = FeatureContext(ItemAttributes.from_items(catalog.items), catalog.items, ActivityTable.build(ev, items),
                         id_vectors=lambda r: unit_id[r], title_vectors=lambda r: unit_title[r])
    scorer = RankerScorer(base, RankingStage(ctx, SearchLog(sr, pd.Index(catalog.item_ids)), None, cfg))
    return catalog, scorer, store, id_queries, memory


# -- the app under uvicorn -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(settings: Settings, wait_for_llm: bool = True) -> Iterator[tuple[httpx.Client, RecommendationService]]:
    """The real app under uvicorn in a thread on a free local port, and an HTTP client for it (after the LLM's
    background load, unless `wait_for_llm` is False)."""
    service = RecommendationService.load(settings)
    if wait_for_llm:
        service.bundle.wait_for_llm(120)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, service), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, service
    finally:
        srv.should_exit = True
        thread.join(10)
        service.close()


# -- an H&M-format dataset with a day basket (tests/test_day_moments.py) ----------------------------------------

CATEGORY = "Garment Upper body"


# article id -> product name; every article is a top of its own family (product code = the first 7 digits).
ARTICLES = {"0100000001": "Hazel", "0200000001": "Xenon", "0300000001": "Xylo", "0400000001": "Xeno",
            "0500000001": "Tango", "0600000001": "Umber", "0700000001": "Vireo", "0800000001": "Wren"}


H, X1, X2, X3, T = "0100000001", "0200000001", "0300000001", "0400000001", "0500000001"


BASKET = [X1, X2, X3, T]


TRANSACTIONS = [  # (day, customer, article), in file order
    ("2019-01-01", "uA", H),
    *[("2019-01-10", "uA", a) for a in BASKET], ("2019-01-10", "uA", T),  # T twice: two units
    *[("2019-01-09", "uB", a) for a in BASKET],
    ("2019-01-10", "uB", T),
    ("2019-01-05", "uC", "0600000001"),
]  # fmt: skip


DAY10 = pd.Timestamp("2019-01-10", tz="UTC")


def write_hm(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "transactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_dat", "customer_id", "article_id", "price", "sales_channel_id"])
        w.writerows([(d, c, a, 0.03, 2) for d, c, a in TRANSACTIONS])
    fields = ["article_id", "prod_name", "product_type_name", "product_group_name", "colour_group_name",
              "index_group_name", "section_name"]
    rows = [(a, name, "Top", CATEGORY, "Black", "Ladieswear", "Womens Casual") for a, name in ARTICLES.items()]
    with open(folder / "articles.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)
    full = pd.DataFrame(rows, columns=fields)
    full["article_id"] = full["article_id"].astype("int64")
    full.to_parquet(folder / "articles_full_catalog.parquet")
    return folder


def acted_users(workdir: Path, n: int = 20) -> pd.DataFrame:
    """The first `n` users of a workdir with a clicked or bought item, and the category of their last one."""
    ev = pd.read_parquet(workdir / "canonical" / "events.parquet")
    items = pd.read_parquet(workdir / "canonical" / "items.parquet").set_index("item_id")
    acted = ev[ev["action"].isin(["click", "purchase"])].sort_values("timestamp", kind="stable")
    last = acted.groupby("user_id").tail(1)
    return pd.DataFrame({"user_id": last["user_id"].to_numpy(),
                         "category": items.loc[last["item_id"], "category"].to_numpy()}).head(n)
