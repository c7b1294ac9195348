"""LoRA fine-tuning on recommendation prompts, with the paper's perplexity-aware schedule (section 4.3).

- The loss is on the response tokens only (the ID and title lines and the end-of-turn token); prompt tokens are
  labelled -100.
- Perplexity-aware schedule: every training prompt's response perplexity is scored with the model before training;
  the top `high_share` (20%) are trained for `high_epochs` (3) epochs and the rest for `epochs` (1).
- `fine_tune` runs through `accelerate`: on one CPU or GPU as a plain call, and unchanged under
  `accelerate launch --num_processes N` on several GPUs (each process takes its shard of every step's batch).
- The adapter is saved with `save_pretrained`, next to `llm_meta.json` (prompt version, base model, settings).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.llm.prompt import PROMPT_VERSION, Prompt

IGNORE = -100


@dataclass(frozen=True)
class LLMTrainConfig:
    """Fine-tuning settings (the paper's: AdamW, lr 2e-5, 1 epoch, top 20% by perplexity for 3 epochs)."""

    lr: float = 2e-5
    epochs: int = 1
    high_share: float = 0.2  # share of prompts (by response perplexity) trained for high_epochs
    high_epochs: int = 3
    batch_size: int = 4  # prompts per optimizer step
    micro_batch: int = 1  # prompts per forward/backward (gradients accumulate): a 1,024-token prompt's activations
    # through a 30-layer model take ~3 GB; four at once took 11.5 GB of RSS on the CPU
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    mixed_bf16: bool = False  # the forward pass under bf16 autocast (and so its backward); the LoRA
    # weights, their gradients and AdamW stay fp32. On a CPU with native bf16 a 900-token step takes 2.1 s against
    # 3.4 s in fp32 (`models.llm.engine.native_bf16`)
    max_seconds: float | None = None  # stop after this much training time (CPU budgets); None: run the schedule
    seed: int = 0
    progress: bool = True


@dataclass
class LLMTrainResult:
    step_losses: list[float] = field(default_factory=list)
    steps: int = 0
    examples_seen: int = 0
    seconds: float = 0.0
    stopped_early: bool = False  # the time budget ran out before the schedule did


def encode(tokenizer: Any, prompt: Prompt) -> tuple[list[int], list[int]]:
    """input_ids and labels: -100 over the prompt, the response and the end-of-turn token labelled."""
    if prompt.response is None:
        raise ValueError("a training prompt needs a response")
    p = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    r = tokenizer(prompt.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, [IGNORE] * len(p) + r


def collate(tokenizer: Any, rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Left-padded batch: input_ids, attention_mask, labels (B, T)."""
    t = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    labels = torch.full((len(rows), t), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for b, (x, y) in enumerate(rows):
        ids[b, t - len(x):] = torch.tensor(x)
        labels[b, t - len(y):] = torch.tensor(y)
        mask[b, t - len(x):] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def response_nll(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled tokens of each row. (B,)

    Left padding puts every response at the end, so only the last `keep` positions go through the LM head (the
    full (B, T, vocab) logits of a 1,024-token batch are most of the cost with a 49k vocabulary).
    """
    labels = batch["labels"]  # (B, T)
    keep = int((labels != IGNORE).sum(1).max()) + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()  # (B, keep-1, V): predictions for the last keep-1 tokens
    labels = labels[:, labels.shape[1] - keep + 1:]  # (B, keep-1)
    mask = labels != IGNORE
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # (B, T-1)
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.no_grad()
def response_perplexity(model: Any, tokenizer: Any, prompts: Sequence[Prompt], batch_size: int = 8,
                        progress: bool = False) -> np.ndarray:
    """exp(mean response-token NLL) of each prompt under the model. (n,)"""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for s in tqdm(range(0, len(prompts), batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = collate(tokenizer, [encode(tokenizer, p) for p in prompts[s:s + batch_size]])
        out.append(response_nll(model, {k: v.to(device) for k, v in batch.items()}).cpu())
    return np.exp(torch.cat(out).numpy()) if out else np.zeros(0)


def high_perplexity(ppl: np.ndarray, share: float) -> np.ndarray:
    """Indices of exactly the top `round(share * n)` prompts by perplexity (ties: lower index first). (m,)"""
    m = int(round(share * len(ppl)))
    order = np.lexsort((np.arange(len(ppl)), -np.asarray(ppl)))
    return np.sort(order[:m])


def schedule(ppl: np.ndarray, cfg: LLMTrainConfig) -> list[int]:
    """Training order: epoch e holds every prompt still due (high ones for high_epochs, the rest for epochs),
    shuffled per epoch with the seed."""
    high = set(high_perplexity(ppl, cfg.high_share).tolist())
    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []
    for e in range(max(cfg.epochs, cfg.high_epochs if high else 0)):
        due = [i for i in range(len(ppl)) if (cfg.high_epochs if i in high else cfg.epochs) > e]
        order += rng.permutation(due).tolist()
    return order


def fine_tune(model: Any, tokenizer: Any, prompts: Sequence[Prompt], cfg: LLMTrainConfig = LLMTrainConfig(),
              order: Sequence[int] | None = None) -> LLMTrainResult:
    """Train the model's trainable (LoRA) parameters on the prompts, in `order` (default: `cfg.epochs` passes)."""
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    order = list(order) if order is not None else [i for _ in range(cfg.epochs) for i in range(len(prompts))]
    acc = Accelerator(cpu=not torch.cuda.is_available())
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: wrap it with add_lora first")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = acc.prepare(model, opt)
    model.train()
    encoded = {i: encode(tokenizer, prompts[i]) for i in set(order)}
    res = LLMTrainResult()
    t0 = time.perf_counter()
    steps = range(0, len(order), cfg.batch_size)
    bar = tqdm(steps, desc="fine-tune", disable=not (cfg.progress and acc.is_local_main_process), leave=False)
    for s in bar:
        rows = [encoded[i] for i in order[s:s + cfg.batch_size]]
        shard = rows[acc.process_index::acc.num_processes] or rows[:1]  # each process its share of the step
        total = 0.0
        for m in range(0, len(shard), max(cfg.micro_batch, 1)):
            part = shard[m:m + max(cfg.micro_batch, 1)]
            batch = {k: v.to(acc.device) for k, v in collate(tokenizer, part).items()}
            # (autocast here rather than accelerate's mixed_precision: that one is process-wide state, fixed by the
            # first Accelerator of the process)
            with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=cfg.mixed_bf16):
                loss = response_nll(model, batch).sum() / len(shard)  # the mean over the step's prompts
            acc.backward(loss)
            total += float(loss.detach())
        loss = torch.tensor(total, device=acc.device)
        if cfg.grad_clip:
            acc.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        res.step_losses.append(float(acc.gather(loss.detach()[None]).mean()))
        res.steps += 1
        res.examples_seen += len(rows)
        bar.set_postfix(loss=f"{res.step_losses[-1]:.3f}")
        if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds and s + cfg.batch_size < len(order):
            res.stopped_early = True
            break
    res.seconds = time.perf_counter() - t0
    model.eval()
    return res


def save_adapter(model: Any, out: Path, meta: dict) -> Path:
    """`save_pretrained` (the adapter only) plus `llm_meta.json` with the prompt version and base model."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    (out / "llm_meta.json").write_text(json.dumps({"prompt_version": PROMPT_VERSION, **meta}, indent=2, default=str))
    return out


def load_adapter(base_model: Any, path: Path) -> Any:
    """The base model with the saved adapter, in eval mode."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(path)).eval()


def loss_curve_png(losses: Sequence[float], out: Path, title: str) -> Path:
    """Step losses and their running mean, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(1, len(losses) + 1)
    ax.plot(x, losses, lw=0.8, alpha=0.5, label="step loss")
    if len(losses) >= 5:
        w = max(5, len(losses) // 20)
        ax.plot(x[w - 1:], np.convolve(losses, np.ones(w) / w, mode="valid"), lw=2, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("response NLL")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def config_dict(cfg: LLMTrainConfig) -> dict:
    d = asdict(cfg)
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}
