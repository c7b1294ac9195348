"""Reading the model: generation (the paper) and candidate scoring (as LlamaRec does).

- `generate`: batched sampling with the paper's settings (64 new tokens, temperature 0.05, top-p 0.95), optionally
  constrained to the catalog: a prefix trie over the token sequences of `"ID: <item id>\\n"` for the allowed items
  (per row, e.g. the target's category), applied through `generate`'s `prefix_allowed_tokens_fn`, so the ID line
  always names a real item; the title line after it is free.
- `letter_scores`: one forward pass over prompts that end where the answer starts, giving the log-probabilities of
  the candidate letters A..T at that position. It needs no decoding and cannot leave the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.llm.prompt import ID_KEY, LETTERS


@dataclass(frozen=True)
class GenerateConfig:
    """The paper's decoding settings."""

    max_new_tokens: int = 64
    temperature: float = 0.05
    top_p: float = 0.95
    do_sample: bool = True
    batch_size: int = 8
    seed: int = 0


class IdTrie:
    """Prefix trie over the token ids of `"ID: <item>\\n"` for a set of items."""

    def __init__(self, tokenizer: Any, item_ids: Sequence[str]) -> None:
        self.root: dict[int, dict] = {}
        self.items = set(dict.fromkeys(str(i) for i in item_ids))
        self.n_items = 0
        for item in dict.fromkeys(str(i) for i in item_ids):
            node = self.root
            for t in tokenizer(f"{ID_KEY}: {item}\n", add_special_tokens=False)["input_ids"]:
                node = node.setdefault(int(t), {})
            node[-1] = {}  # end of an item's line
            self.n_items += 1

    def follows(self, answer: str) -> bool:
        """Whether a decoded answer's first line is `ID: <an item of this trie>`, as constrained decoding makes it."""
        first = answer.split("\n", 1)[0]
        key = f"{ID_KEY}: "
        return "\n" in answer and first.startswith(key) and first[len(key):] in self.items

    def allowed(self, prefix: Sequence[int]) -> list[int] | None:
        """Next allowed tokens after `prefix` (generated so far), or None once an item's line is complete."""
        node = self.root
        for t in prefix:
            if -1 in node and len(node) == 1:
                return None
            nxt = node.get(int(t))
            if nxt is None:
                return None if -1 in node else []  # off the trie: only after a complete line
            node = nxt
        if -1 in node and len(node) == 1:
            return None
        return [t for t in node if t != -1]


def length_batches(tokenizer: Any, texts: Sequence[str], size: int) -> list[list[int]]:
    """Row indices in batches of `size`, the prompts of similar token length together (longest first), so that
    left padding to a batch's longest prompt wastes little: on a CPU, padding costs as much as real tokens. Callers
    put the answers back in the rows' own order."""
    if size <= 1:
        return [[i] for i in range(len(texts))]
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    return [order[s:s + size] for s in range(0, len(order), size)]


@torch.no_grad()
def generate(model: Any, tokenizer: Any, texts: Sequence[str], cfg: GenerateConfig = GenerateConfig(),
             tries: Sequence[IdTrie | None] | None = None) -> list[str]:
    """Generated answers (decoded, special tokens dropped) for prompts that end where the answer starts.

    `tries[i]`, when given, constrains row i's ID line to its items (catalog-constrained decoding). Batches group
    prompts of similar length (`length_batches`): decoding reads every weight once a step for the whole batch, so on
    a CPU a batch of 8 costs little more a step than one prompt.
    """
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = [""] * len(texts)
    torch.manual_seed(cfg.seed)
    free = list(range(len(tokenizer)))
    for rows in length_batches(tokenizer, texts, cfg.batch_size):
        enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        start = enc["input_ids"].shape[1]
        fn = None
        if tries is not None and any(tries[i] is not None for i in rows):
            row_tries = [tries[i] for i in rows]

            def fn(b: int, ids: torch.Tensor, row_tries: list = row_tries, start: int = start) -> list[int]:
                trie = row_tries[b]
                allowed = trie.allowed(ids[start:].tolist()) if trie is not None else None
                return free if allowed is None else (allowed or [tokenizer.eos_token_id])

        kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                                  "eos_token_id": tokenizer.eos_token_id, "prefix_allowed_tokens_fn": fn}
        if cfg.do_sample:
            kwargs |= {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p}
        else:
            kwargs |= {"do_sample": False}
        gen = model.generate(**enc, **kwargs)  # (b, start + new)
        for i, text in zip(rows, tokenizer.batch_decode(gen[:, start:], skip_special_tokens=True), strict=True):
            out[i] = text
    return out


def letter_token_ids(tokenizer: Any, n: int = len(LETTERS)) -> list[int]:
    """The token id of each candidate letter; raises unless every letter is exactly one token."""
    ids = []
    for letter in LETTERS[:n]:
        t = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(t) != 1:
            raise ValueError(f"candidate letter {letter!r} is {len(t)} tokens in this tokenizer; need exactly 1")
        ids.append(int(t[0]))
    return ids


@torch.no_grad()
def letter_scores(model: Any, tokenizer: Any, texts: Sequence[str], n_letters: Sequence[int],
                  batch_size: int = 8) -> list[np.ndarray]:
    """Per prompt, log-probabilities over its first `n_letters[i]` letters at the answer position (normalised over
    those letters). Prompts end where the answer starts (left padding puts that position last).

    On a CPU the prompts go one at a time, whatever `batch_size`: a forward pass over a prompt is compute-bound
    there, so a batch saves nothing, and its padding (and the masked attention it needs) costs up to a third more
    (benchmarks/llm_runtime.py; bf16, length-sorted batches of 4 and 8: 0.89x and 0.74x)."""
    model.eval()
    device = next(model.parameters()).device
    if device.type == "cpu":
        batch_size = 1
    letters = letter_token_ids(tokenizer)
    out: list[np.ndarray] = [np.empty(0)] * len(texts)
    for rows in length_batches(tokenizer, texts, batch_size):
        enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**{k: v.to(device) for k, v in enc.items()}, logits_to_keep=1).logits[:, -1].float()  # (b, V)
        for j, i in enumerate(rows):
            x = logits[j, letters[: n_letters[i]]]  # (n,)
            out[i] = torch.log_softmax(x, dim=0).cpu().numpy()
    return out
