"""One training function for every sequential recommender, with full-ranking validation and early stopping."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from models.seqrec.base import SequentialRecommender, pad_sequences
from models.seqrec.data import SeqData, iterate_batches, make_windows, query_positions

# The auto loss (TrainConfig.sampled_negatives None): a full softmax while the vocabulary is at most this many real
# items (the bundled sample's 5.2k), a sampled one over AUTO_NEGATIVES shared negatives above it.
FULL_SOFTMAX_MAX_ITEMS = 16_384
AUTO_NEGATIVES = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Run-level training settings (model hyperparameters live in the model's own config)."""

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0  # max global grad norm; None disables
    patience: int = 5  # epochs without a better validation NDCG@k before stopping (counted from the first hit)
    k: int = 10  # cutoff for validation NDCG / hit rate
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    progress: bool = True  # tqdm progress bar
    # 0: a full softmax over the item vocabulary; N: a sampled softmax over N shared uniform negatives per batch
    # (SequentialRecommender.softmax_loss), whose cost grows with N, not the catalog; None (auto): the full softmax
    # up to FULL_SOFTMAX_MAX_ITEMS real items, AUTO_NEGATIVES sampled above (`negatives_for`). BCE models ignore it.
    sampled_negatives: int | None = None
    # Under a sampled loss, update the item table sparsely (`sparse_table_for`): faster as the catalog grows, but on
    # medium-s0 it cost the ID model a quarter of its N@10 (docs/models.md), so the default is the dense update.
    sparse_table: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.k < 1:
            raise ValueError("epochs, batch_size, patience and k must be >= 1")
        if self.sampled_negatives is not None and self.sampled_negatives < 0:
            raise ValueError(f"sampled_negatives must be >= 0 (0: full softmax) or None (auto), "
                             f"got {self.sampled_negatives}")

    def negatives_for(self, n_items: int) -> int:
        """The sampled negatives a model over `n_items` rows (padding and cold included) trains with: the set
        number, or under auto 0 (the exact full softmax) up to FULL_SOFTMAX_MAX_ITEMS real items and AUTO_NEGATIVES
        above. On medium-s0 (25.7k items) the sampled loss fits 16x faster at the same quality (docs/results.md)."""
        if self.sampled_negatives is not None:
            return self.sampled_negatives
        return AUTO_NEGATIVES if n_items - 2 > FULL_SOFTMAX_MAX_ITEMS else 0

    def sparse_table_for(self, negatives: int, n_items: int) -> bool:
        """Whether the item table trains with sparse gradients and a lazy Adam (`torch.optim.SparseAdam`). Under a
        sampled loss a step reads only the batch's items, its negatives and the cold row, yet a dense Adam step
        rewrites every row of the table (its moments decay, its momentum moves it), so a step costs the whole
        vocabulary and an epoch costs data x vocabulary. The sparse step touches only the rows the batch read; the
        rows of rarely drawn items then move far less, which is what costs the ID model its quality on medium-s0.
        Only with `sparse_table`, a sampled loss (under the full softmax every row has a gradient) and no weight
        decay (which SparseAdam lacks)."""
        if not self.sparse_table:
            return False
        if not 0 < negatives < n_items - 2:
            raise ValueError("sparse_table needs a sampled loss: under the full softmax every row has a gradient")
        if self.weight_decay:
            raise ValueError("sparse_table has no weight decay (torch.optim.SparseAdam); set weight_decay=0")
        return True


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: per-epoch losses and metrics, the restored best epoch, timings."""

    losses: tuple[float, ...]  # mean training loss per epoch
    val_metrics: tuple[dict[str, float], ...]  # validation metrics per epoch (empty without validation)
    best_metrics: dict[str, float]  # validation metrics of the restored epoch
    best_epoch: int  # 0-based; the last epoch when there is no validation data
    epoch_seconds: tuple[float, ...]  # wall time per epoch, training + validation
    total_seconds: float
    device: str
    sampled_negatives: int = 0  # the loss it trained with: 0 the full softmax, N a sampled one (TrainConfig.negatives_for)
    sparse_table: bool = False  # whether the item table trained with sparse gradients (TrainConfig.sparse_table_for)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    model: SequentialRecommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """NDCG@k and hit@k of `targets` in the full-vocab ranking (ties rank ahead); leaves eval mode on."""
    model.eval()
    device = next(model.parameters()).device
    ndcg = hit = 0.0
    for start in range(0, len(histories), batch_size):
        seqs = pad_sequences(histories[start : start + batch_size], model.max_len).to(device)  # (b, L)
        target = torch.as_tensor(targets[start : start + batch_size], device=device)[:, None]  # (b, 1)
        scores = model.score_all(seqs)  # (b, n_items)
        rank = (scores >= scores.gather(1, target)).sum(1) - 1  # (b,) 0-based, pessimistic on ties
        top = rank < k  # (b,)
        hit += top.sum().item()
        ndcg += (top / torch.log2(rank.double() + 2)).sum().item()
    n = max(len(histories), 1)
    return {f"ndcg@{k}": ndcg / n, f"hit@{k}": hit / n}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TableOptimizer:
    """Adam over the model's parameters; with `sparse`, the item table apart, under `torch.optim.SparseAdam` (the
    model's item embedding then gives sparse gradients: every loss that samples reads the table through it)."""

    def __init__(self, model: SequentialRecommender, cfg: TrainConfig, sparse: bool) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        table = model.item_embedding.weight
        rest = [p for p in self.params if p is not table] if sparse else self.params
        # fused: one kernel over every parameter instead of a loop of small ops; under a sampled loss the dense update
        # of the item table is a fifth of a step's time on medium-s0 x 4, and fused makes it about 5x cheaper.
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(rest, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                                         fused=True)]
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam([table], lr=cfg.lr))

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def clip(self, max_norm: float) -> None:
        """`torch.nn.utils.clip_grad_norm_` (itself, when every gradient is dense), over sparse gradients too: the
        global norm, each gradient scaled by max_norm / (norm + 1e-6) where that is under 1."""
        sparse = [p for p in self.params if p.grad is not None and p.grad.is_sparse]
        if not sparse:
            torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            return
        for p in sparse:
            p.grad = p.grad.coalesce()  # the lookups of one row (in a history, among the scored rows) summed
        grads = [p.grad.values() if p.grad.is_sparse else p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = max_norm / (norm + 1e-6)
        if coef < 1:
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(coef)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


def train(model: SequentialRecommender, data: SeqData, cfg: TrainConfig | None = None) -> TrainResult:
    """Train with Adam, validate every epoch, stop early on NDCG@k and restore the best state."""
    cfg = cfg or TrainConfig()
    if data.n_items != model.n_items:
        raise ValueError(f"data has {data.n_items} items but the model was built for {model.n_items}")
    windows = make_windows(data.train, model.max_len)  # (N, L+1)
    query = query_positions(data.train_moments, model.max_len) if data.train_moments is not None else None  # (N, L)
    if len(windows) == 0:
        raise ValueError("no training sequence has two or more items")
    negatives = cfg.negatives_for(model.n_items)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)  # batch order, independent of model RNG use
    sparse = cfg.sparse_table_for(negatives, model.n_items)
    optimizer = TableOptimizer(model, cfg, sparse)
    model.item_embedding.sparse = sparse  # the lookups' gradients: sparse rows, or the dense table
    try:
        return _train(model, data, cfg, windows, query, negatives, sparse, optimizer, device, generator)
    finally:
        model.item_embedding.sparse = False  # a trained model's table is an ordinary dense embedding


def _train(model: SequentialRecommender, data: SeqData, cfg: TrainConfig, windows: torch.Tensor,
           query: torch.Tensor | None, negatives: int, sparse: bool, optimizer: TableOptimizer,
           device: torch.device, generator: torch.Generator) -> TrainResult:
    """`train`'s epochs, once the model, data and optimizer are set up."""
    has_valid = len(data.valid_targets) > 0
    key = f"ndcg@{cfg.k}"

    losses: list[float] = []
    val_metrics: list[dict[str, float]] = []
    epoch_seconds: list[float] = []
    best_score, best_epoch, best_state, stale = -math.inf, -1, None, 0
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t_epoch = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            iterate_batches(windows, cfg.batch_size, generator, query),
            total=math.ceil(len(windows) / cfg.batch_size),
            desc=f"epoch {epoch}",
            disable=not cfg.progress,
            leave=False,
        )
        for batch in bar:
            loss = model.loss(batch.to(device), negatives=negatives)
            optimizer.zero_grad()
            loss.backward()
            if cfg.grad_clip is not None:
                optimizer.clip(cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(batch.seqs)
            count += len(batch.seqs)
            bar.set_postfix(loss=f"{total / count:.4f}")
        losses.append(total / count)

        if has_valid:
            metrics = evaluate(model, data.valid_histories, data.valid_targets, cfg.k, cfg.eval_batch_size)
            val_metrics.append(metrics)
            # No validation hit yet is no plateau (a small validation set can score 0 for several epochs while the
            # model learns): a 0 after 0s is taken as the best so far, the latest, and patience waits for a hit.
            if metrics[key] > best_score or metrics[key] == best_score == 0:
                best_score, best_epoch, stale = metrics[key], epoch, 0
                best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
            else:
                stale += 1
        epoch_seconds.append(time.perf_counter() - t_epoch)
        if cfg.progress:
            shown = f" {key}={val_metrics[-1][key]:.4f}" if has_valid else ""
            tqdm.write(f"epoch {epoch}: loss={losses[-1]:.4f}{shown}")
        if has_valid and stale >= cfg.patience:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        losses=tuple(losses),
        val_metrics=tuple(val_metrics),
        best_metrics=val_metrics[best_epoch] if has_valid else {},
        best_epoch=best_epoch if has_valid else len(losses) - 1,
        epoch_seconds=tuple(epoch_seconds),
        total_seconds=time.perf_counter() - t_start,
        device=str(device),
        sampled_negatives=negatives,
        sparse_table=sparse,
    )
