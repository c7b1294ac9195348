"""Training of the title embedding model (paper section 4.4): purchase pairs -> tokenizer + shared LSTM -> checkpoint.

Data flows one way: `build_pairs` (training period only) -> `train_title_model` -> `save_title_model` ->
`embed_catalog` over EVERY catalog item, so items no one interacted with (cold start) still get a title vector.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from models.common import utc
from models.text.encoder import (
    LSTMEncoderConfig,
    LSTMTextEncoder,
    LSTMTitleEncoder,
    TextEncoder,
    torch_threads,
)
from models.text.tokenizer import TokenizerConfig, normalize_text, train_tokenizer
from models.text.triplet import (
    CatalogIndex,
    TripletConfig,
    in_batch_triplet_loss,
    mine_catalog,
    pair_triplet_loss,
)

TRAIN_CONFIG_FILE = "train_config.json"
TRAIN_RESULT_FILE = "train_result.json"


def build_pairs(
    events: pd.DataFrame,
    search_results: pd.DataFrame | None = None,
    cutoff: pd.Timestamp | str | None = None,
    *,
    include_clicks: bool = False,
    attribution: Literal["all", "last"] = "all",
    require_shown: bool = False,
) -> pd.DataFrame:
    """(query, item_id) positives: items purchased (optionally clicked) after a search in the same session.

    Only events strictly before `cutoff` are read. `attribution="all"` pairs an item with every earlier search of
    its session (reformulations of one intent), "last" with the latest one only. `require_shown` keeps a pair only
    if the item was among that search's results (needs `search_results`). Returns columns query, item_id, action,
    user_id, session_id, search_id, search_at, action_at; one row per (session, query text, item, action).
    """
    cols = ["query", "item_id", "action", "user_id", "session_id", "search_id", "search_at", "action_at"]
    ev = events
    if cutoff is not None:
        ev = ev[ev["timestamp"] < utc(cutoff)]
    ev = ev.sort_values(["user_id", "session_id", "timestamp"], kind="stable").reset_index(drop=True)
    ev = ev.assign(seq=np.arange(len(ev)))  # ties in timestamp keep file order
    searches = ev[ev["action"] == "search"][
        ["user_id", "session_id", "seq", "timestamp", "query", "search_id"]
    ]
    searches = searches.rename(columns={"seq": "search_seq", "timestamp": "search_at"})
    searches = searches.assign(search_id=searches["search_id"].astype("Int64"))
    if (
        searches["query"].isna().any() and search_results is not None
    ):  # fill missing text from the results log
        text = search_results.drop_duplicates("search_id").set_index("search_id")["query"]
        searches = searches.assign(query=searches["query"].fillna(searches["search_id"].map(text)))
    searches = searches[searches["query"].fillna("").str.strip() != ""]
    actions = ["purchase", "click"] if include_clicks else ["purchase"]
    targets = ev[ev["action"].isin(actions) & ev["item_id"].notna()]
    targets = targets[["user_id", "session_id", "seq", "timestamp", "item_id", "action"]].rename(
        columns={"timestamp": "action_at"}
    )
    pairs = targets.merge(searches, on=["user_id", "session_id"])
    pairs = pairs[pairs["search_seq"] < pairs["seq"]]
    if attribution == "last":
        pairs = pairs.sort_values(["seq", "search_seq"]).drop_duplicates("seq", keep="last")
    if require_shown:
        if search_results is None:
            raise ValueError("require_shown=True needs search_results")
        shown = search_results[["search_id", "item_id"]].drop_duplicates()
        pairs = pairs.merge(shown.astype({"search_id": "Int64"}), on=["search_id", "item_id"])
    pairs = pairs.assign(_key=pairs["query"].map(normalize_text))
    pairs = pairs.sort_values(["seq", "search_seq"], kind="stable")
    pairs = pairs.drop_duplicates(["user_id", "session_id", "_key", "item_id", "action"])
    return pairs[cols].reset_index(drop=True)


@dataclass(frozen=True)
class TitleTrainConfig:
    """Everything that defines a title-model training run."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    encoder: LSTMEncoderConfig = field(default_factory=LSTMEncoderConfig)  # vocab_size/pad_id: from tokenizer
    triplet: TripletConfig = field(default_factory=TripletConfig)
    epochs: int = 5
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    num_threads: int | None = 1  # torch threads while training (see encoder.torch_threads); None: as is
    show_progress: bool = True


@dataclass
class TrainResult:
    """What a training run did: per-epoch mean training loss and the in-batch loss before/after on fixed batches."""

    epoch_losses: list[float]
    initial_loss: float
    final_loss: float
    n_pairs: int
    n_dropped_pairs: int  # pairs whose item is not in the catalog
    n_steps: int
    seconds: float
    mining: str
    trained: bool = True  # False: fewer than 2 pairs, the encoder is its random initialisation


def _seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _join_titles(pairs: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Attach title and family_id to pairs; pairs with unknown items are dropped."""
    catalog = items[["item_id", "title", "family_id"]].drop_duplicates("item_id")
    df = pairs[["query", "item_id"]].merge(catalog, on="item_id", how="inner")
    df = df[df["title"].notna() & df["query"].notna()].reset_index(drop=True)
    return df.assign(query_key=df["query"].map(normalize_text))


def _batch_loss(
    model: LSTMTitleEncoder, batch: pd.DataFrame, cfg: TripletConfig, index: CatalogIndex | None
) -> torch.Tensor:
    """Triplet loss of one batch of (query, title) pairs, mining in-batch or from the catalog index."""
    families = list(batch["family_id"]) if cfg.exclude_same_family else None
    q = model.embed(list(batch["query"]))  # (B, D)
    t = model.embed(list(batch["title"]))  # (B, D)
    if index is None:
        keys, item_ids = list(batch["query_key"]), list(batch["item_id"])
        return in_batch_triplet_loss(q, t, keys, item_ids, cfg.margin, families, cfg.negatives).loss
    neg_t, neg_q = mine_catalog(
        q.detach().cpu().numpy(),
        t.detach().cpu().numpy(),
        list(batch["query_key"]),
        list(batch["item_id"]),
        list(batch["family_id"]),
        index,
        cfg,
    )
    t_neg = model.embed([x or "" for x in neg_t])  # (B, D) re-embedded with grad
    q_neg = model.embed([x or "" for x in neg_q])  # (B, D)
    valid_t = torch.tensor([x is not None for x in neg_t])  # (B,)
    valid_q = torch.tensor([x is not None for x in neg_q])  # (B,)
    return pair_triplet_loss(q, t, t_neg, q_neg, valid_t, valid_q, cfg.margin)


def build_catalog_index(model: LSTMTitleEncoder, items: pd.DataFrame, df: pd.DataFrame) -> CatalogIndex:
    """Embed every catalog title and every distinct training query with the current model (catalog mining)."""
    catalog = items[items["title"].notna()].drop_duplicates("item_id")
    queries = sorted(df["query_key"].unique())
    pos_items: dict[str, set[str]] = {}
    pos_families: dict[str, set[str]] = {}
    for key, item, fam in zip(df["query_key"], df["item_id"], df["family_id"], strict=True):
        pos_items.setdefault(key, set()).add(item)
        pos_families.setdefault(key, set()).add(fam)
    return CatalogIndex(
        titles=list(catalog["title"]),
        item_ids=catalog["item_id"].to_numpy(),
        family_ids=catalog["family_id"].to_numpy(),
        title_emb=embed_catalog(model, catalog),
        queries=queries,
        query_emb=model.encode(queries),
        pos_items=pos_items,
        pos_families=pos_families,
    )


@torch.no_grad()
def evaluate_loss(model: LSTMTitleEncoder, df: pd.DataFrame, cfg: TripletConfig, batch_size: int) -> float:
    """Mean in-batch triplet loss over fixed consecutive batches in eval mode (comparable before/after training)."""
    was_training = model.model.training
    model.model.eval()
    in_batch = replace(cfg, mining="in_batch")
    losses = [
        _batch_loss(model, df.iloc[s : s + batch_size], in_batch, None).item()
        for s in range(0, len(df), batch_size)
    ]
    model.model.train(was_training)
    return float(np.mean(losses)) if losses else float("nan")


def train_title_model(
    pairs: pd.DataFrame, items: pd.DataFrame, cfg: TitleTrainConfig = TitleTrainConfig()
) -> tuple[LSTMTitleEncoder, TrainResult]:
    """Train tokenizer + shared query/title LSTM with the two-hard-negative triplet loss; seeded and deterministic."""
    with torch_threads(cfg.num_threads):
        return _train(pairs, items, cfg)


def _train(
    pairs: pd.DataFrame, items: pd.DataFrame, cfg: TitleTrainConfig
) -> tuple[LSTMTitleEncoder, TrainResult]:
    """The body of `train_title_model`."""
    start = time.perf_counter()
    _seed_everything(cfg.seed)
    df = _join_titles(pairs, items)
    # With fewer than 2 pairs (a log without searches, such as H&M) there is no triplet to learn from: the model is
    # returned untrained (n_steps 0, `trained` False) so that titles can still be embedded and the graph goes on.
    trainable = len(df) >= 2
    # Tokenizer sees the catalog titles and the training queries only: pass the catalog as known at training time.
    tokenizer = train_tokenizer([*items["title"].dropna(), *df["query"]], cfg.tokenizer)
    enc_cfg = replace(cfg.encoder, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    model = LSTMTitleEncoder(tokenizer, LSTMTextEncoder(enc_cfg))
    opt = torch.optim.Adam(model.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    initial = evaluate_loss(model, df, cfg.triplet, cfg.batch_size) if trainable else float("nan")

    epoch_losses: list[float] = []
    n_steps = 0
    for epoch in range(cfg.epochs if trainable else 0):
        index = build_catalog_index(model, items, df) if cfg.triplet.mining == "catalog" else None
        model.model.train()
        perm = torch.randperm(len(df), generator=gen).numpy()
        starts = range(0, len(df), cfg.batch_size)
        bar = tqdm(
            starts, desc=f"title epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.show_progress, leave=False
        )
        total = 0.0
        for s in bar:
            loss = _batch_loss(model, df.iloc[perm[s : s + cfg.batch_size]], cfg.triplet, index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.item()
            n_steps += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        epoch_losses.append(total / len(starts))
        if cfg.show_progress:
            tqdm.write(f"title epoch {epoch + 1}/{cfg.epochs}: loss {epoch_losses[-1]:.4f}")
    model.model.eval()
    result = TrainResult(
        epoch_losses=epoch_losses,
        initial_loss=initial,
        final_loss=evaluate_loss(model, df, cfg.triplet, cfg.batch_size) if trainable else float("nan"),
        n_pairs=len(df),
        n_dropped_pairs=len(pairs) - len(df),
        n_steps=n_steps,
        seconds=time.perf_counter() - start,
        mining=cfg.triplet.mining,
        trained=trainable,
    )
    return model, result


def save_title_model(
    model: LSTMTitleEncoder,
    directory: str | Path,
    cfg: TitleTrainConfig | None = None,
    result: TrainResult | None = None,
) -> Path:
    """Write weights + encoder config + tokenizer (and the training config/result, if given) into one directory."""
    directory = model.save(directory)
    if cfg is not None:
        (directory / TRAIN_CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2))
    if result is not None:
        (directory / TRAIN_RESULT_FILE).write_text(json.dumps(asdict(result), indent=2))
    return directory


def load_title_model(
    directory: str | Path, device: str = "cpu", num_threads: int | None = 1
) -> LSTMTitleEncoder:
    """Load a model written by `save_title_model`."""
    return LSTMTitleEncoder.load(directory, device=device, num_threads=num_threads)


def embed_catalog(
    encoder: TextEncoder, items: pd.DataFrame | Sequence[str], batch_size: int = 512
) -> np.ndarray:
    """Title embeddings (n_items, D) float32 for EVERY row of items, in row order (cold-start items included)."""
    uniq, inverse = unique_titles(items)
    if len(uniq) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return spread(encoder.encode(list(uniq), batch_size=batch_size), inverse)


def unique_titles(items: pd.DataFrame | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct titles of items (U,) and each row's position among them (n,): identical titles are embedded
    once (`embed_catalog`; `spread` maps the U embeddings back onto the rows). A missing title is ""."""
    titles = items["title"] if isinstance(items, pd.DataFrame) else pd.Series(list(items), dtype=object)
    uniq, inverse = np.unique(titles.fillna("").astype(str).to_numpy(), return_inverse=True)
    return uniq, inverse.reshape(-1)


def spread(emb: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """(n, D) float32: the distinct titles' embeddings (U, D) on every row (`unique_titles`' inverse)."""
    return np.ascontiguousarray(emb[inverse], dtype=np.float32)
