"""Inference engines for the LLM: one interface for letter scoring and generation, two implementations.

Training, evaluation and serving read the model through an `Engine`, so they share one runtime:
- `TorchEngine` (`torch-fp32`, the reference): the model in torch, the last position only through the LM head
  (`letter_scores`), sampling or catalog-constrained decoding through `generate` (`models.llm.generate`).
- `bf16_engine` (`torch-bf16`): the reference with its adapter merged and its weights in bf16, on the same torch code;
  on a CPU with native bf16 (AVX512-BF16, AMX) the fastest and closest to fp32 (`native_bf16`).
- `CT2Engine` (`ctranslate2-int8`): the same weights, the LoRA adapter merged, converted to CTranslate2 (int8 on a
  CPU). Letter scoring reads the log-probabilities of the first answer step (`generate_batch(max_length=1,
  return_logits_vocab=True)`), with the instruction (the system message, the same in every prompt of a kind) as a
  cached static prompt. Generation samples with the paper's settings. CTranslate2 cannot restrict decoding to a
  prefix trie, so catalog-constrained generation keeps an engine answer only when its ID line already names an
  allowed item, and decodes the other rows again, constrained, on the torch path (the `fallback` engine); without
  a fallback it refuses them with the reason.

`export_ct2` merges and converts a model; `ensure_ct2` rebuilds the converted folder only when its key (base model,
adapter digest, quantization, CTranslate2 version) changes, so a new adapter always gets a new conversion.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.llm.generate import GenerateConfig, IdTrie, generate, letter_scores, letter_token_ids

AUTO, TORCH, TORCH_BF16, CT2 = "auto", "torch", "torch-bf16", "ctranslate2"
ENGINES = (AUTO, TORCH, TORCH_BF16, CT2)
ENGINE_META = "engine_meta.json"


class Engine(Protocol):
    """What the LLM stage reads: letter log-probabilities and generated answers for prompts that end where the
    answer starts."""

    name: str  # e.g. "torch-fp32", "ctranslate2-int8": reported beside every LLM result
    tokenizer: Any

    def letter_scores(self, texts: Sequence[str], n_letters: Sequence[int], batch_size: int = 8
                      ) -> list[np.ndarray]: ...

    def generate(self, texts: Sequence[str], cfg: GenerateConfig = GenerateConfig(),
                 tries: Sequence[IdTrie | None] | None = None) -> list[str]: ...


class TorchEngine:
    """The torch model as an `Engine` (fp32; `bf16=True` runs the forward passes under bf16 autocast)."""

    def __init__(self, model: Any, tokenizer: Any, bf16: bool = False, name: str | None = None) -> None:
        self.model, self.tokenizer, self.bf16 = model, tokenizer, bf16
        self.name = name or ("torch-bf16-autocast" if bf16 else "torch-fp32")

    def _autocast(self) -> Any:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def letter_scores(self, texts: Sequence[str], n_letters: Sequence[int], batch_size: int = 8) -> list[np.ndarray]:
        with self._autocast():
            return letter_scores(self.model, self.tokenizer, texts, n_letters, batch_size)

    def generate(self, texts: Sequence[str], cfg: GenerateConfig = GenerateConfig(),
                 tries: Sequence[IdTrie | None] | None = None) -> list[str]:
        with self._autocast():
            return generate(self.model, self.tokenizer, texts, cfg, tries)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Elsewhere torch emulates bf16 matmuls,
    slower than fp32, and `bf16_engine` is not worth it."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(p()) for p in probes if p is not None)
    except RuntimeError:
        return False


def bf16_engine(reference: TorchEngine) -> TorchEngine:
    """The reference's model with its adapter merged and its weights cast to bf16 (`torch-bf16`), on the same torch
    code: letter scoring and catalog-constrained generation alike. On a CPU with native bf16 (`native_bf16`) it is
    faster than CTranslate2 int8 and far closer to fp32 (benchmarks/llm_runtime.py): bf16 keeps 8 bits of mantissa
    per weight, where int8 has 8 bits per row's range."""
    # (A cached instruction, as CTranslate2's static prompt, was tried: on this CPU copying the cache and the cached
    # attention path cost more than the ~15% of tokens it saves, 429 against 344-386 ms a prompt; docs/results.md.)
    return TorchEngine(merged_model(reference.model).to(torch.bfloat16), reference.tokenizer, name=TORCH_BF16)


def static_prefix(tokenizer: Any, texts: Sequence[str]) -> int:
    """The number of leading tokens every prompt shares, cut at the end of the first message (the instruction),
    so that it can be cached once; 0 when the prompts do not share their first message."""
    if not texts:
        return 0
    marker = "<|im_end|>"
    head = texts[0][: texts[0].find(marker) + len(marker)] if marker in texts[0] else ""
    if not head or any(not t.startswith(head) for t in texts):
        return 0
    return len(tokenizer(head, add_special_tokens=False)["input_ids"])


class CT2Engine:
    """A CTranslate2 `Generator` over a converted folder (see `export_ct2`) as an `Engine`."""

    TRIAL = 8  # constrained rows tried on the engine before `engine_first` judges its on-trie rate

    def __init__(self, path: Path, tokenizer: Any, compute_type: str = "int8", threads: int = 0,
                 fallback: TorchEngine | None = None) -> None:
        import ctranslate2

        self.path, self.tokenizer, self.fallback = Path(path), tokenizer, fallback
        self.generator = ctranslate2.Generator(str(path), device="cpu", compute_type=compute_type,
                                               intra_threads=threads or torch.get_num_threads())
        self.name = f"ctranslate2-{compute_type}"
        self.constrained_on_torch = 0  # constrained answers decoded (again) on the torch fallback
        self.on_trie = (0, 0)  # (engine answers already on their trie, constrained rows tried on the engine)

    def _tokens(self, texts: Sequence[str]) -> tuple[list[str] | None, list[list[str]]]:
        """(the shared static prompt's tokens or None, each prompt's remaining tokens)."""
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        toks = [self.tokenizer.convert_ids_to_tokens(i) for i in ids]
        p = static_prefix(self.tokenizer, texts)
        if p and all(len(t) > p and t[:p] == toks[0][:p] for t in toks):
            return toks[0][:p], [t[p:] for t in toks]
        return None, toks

    def letter_scores(self, texts: Sequence[str], n_letters: Sequence[int], batch_size: int = 8) -> list[np.ndarray]:
        letters = letter_token_ids(self.tokenizer)
        static, rest = self._tokens(texts)
        out: list[np.ndarray] = []
        for toks, n in zip(rest, n_letters, strict=True):  # one at a time: a batch forwards only its shortest
            res = self.generator.generate_batch([toks], max_length=1, include_prompt_in_result=False,
                                                return_logits_vocab=True, static_prompt=static)[0]
            logits = np.asarray(res.logits[0][0], dtype=np.float32)  # (V,) first answer step
            x = torch.from_numpy(logits[letters[:n]])
            out.append(torch.log_softmax(x, dim=0).numpy())
        return out

    def engine_first(self) -> bool:
        """Whether constrained rows try the engine first: until `TRIAL` of them were tried, and then while at least
        half of the engine's answers were already on the trie (else each would be decoded twice)."""
        kept, tried = self.on_trie
        return tried < self.TRIAL or kept >= tried / 2

    def generate(self, texts: Sequence[str], cfg: GenerateConfig = GenerateConfig(),
                 tries: Sequence[IdTrie | None] | None = None) -> list[str]:
        """Answers sampled (or greedy) on the engine. With `tries`, an answer whose ID line already names an item of
        its row's trie is kept (under greedy decoding, constrained decoding gives that same answer: every token of
        it is allowed, and the best allowed token is the best token), and the other rows are decoded again,
        constrained, on the torch `fallback`. A model whose engine answers mostly leave the trie (`engine_first`)
        has its constrained rows decoded on torch directly."""
        import ctranslate2

        constrained = [i for i, t in enumerate(tries or []) if t is not None]
        if constrained and self.fallback is None:
            raise ValueError("catalog-constrained generation needs the torch engine as a fallback (CTranslate2 "
                             "cannot restrict decoding to a prefix trie): give CT2Engine a fallback")
        direct = set() if self.engine_first() else set(constrained)
        ctranslate2.set_random_seed(cfg.seed)
        static, rest = self._tokens(texts)
        sampling = {"sampling_topk": 0, "sampling_topp": cfg.top_p, "sampling_temperature": cfg.temperature} \
            if cfg.do_sample else {"sampling_topk": 1}
        out: list[str] = [""] * len(texts)
        for i, toks in enumerate(rest):
            if i in direct:
                continue
            res = self.generator.generate_batch([toks], max_length=cfg.max_new_tokens, include_prompt_in_result=False,
                                                static_prompt=static, end_token=self.tokenizer.eos_token,
                                                **sampling)[0]
            out[i] = self.tokenizer.decode(res.sequences_ids[0], skip_special_tokens=True)
        tried = [i for i in constrained if i not in direct]
        redo = [i for i in tried if not tries[i].follows(out[i])]  # type: ignore[index, union-attr]
        self.on_trie = (self.on_trie[0] + len(tried) - len(redo), self.on_trie[1] + len(tried))
        todo = sorted(direct | set(redo))
        self.constrained_on_torch += len(todo)
        if todo:
            again = self.fallback.generate([texts[i] for i in todo], cfg, [tries[i] for i in todo])  # type: ignore[union-attr, index]
            for i, text in zip(todo, again, strict=True):
                out[i] = text
        return out


def merged_model(model: Any) -> Any:
    """A plain transformers model with the LoRA adapter (if any) merged into its weights; `model` is unchanged.

    A fresh model is built from the config and given the merged state dict, because a GGUF-loaded model refuses
    `save_pretrained`."""
    from transformers import AutoModelForCausalLM

    merged = copy.deepcopy(model)
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()
    config = copy.deepcopy(merged.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):  # the GGUF load's: the weights are fp32 now
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(merged.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise ValueError(f"merged model does not match its config: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    return fresh.eval()


def export_ct2(model: Any, tokenizer: Any, out: Path, meta: dict, quantization: str = "int8") -> Path:
    """Merge, convert to CTranslate2 at `quantization`, and write `engine_meta.json` (with `meta`) beside it."""
    import ctranslate2

    t0 = time.perf_counter()
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="fashionrec-hf-") as tmp:
        merged = merged_model(model)
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        staging = out.with_name(out.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        ctranslate2.converters.TransformersConverter(tmp).convert(str(staging), quantization=quantization,
                                                                  force=True)
    info = {**meta, "quantization": quantization, "ctranslate2": ctranslate2.__version__,
            "convert_seconds": round(time.perf_counter() - t0, 1)}
    (staging / ENGINE_META).write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)  # a reader never sees a half-written folder
    return out


def engine_key(base_model: str, adapter_digest: str, quantization: str = "int8") -> dict:
    """What a converted folder was built from; `ensure_ct2` rebuilds it when any of these change."""
    import ctranslate2

    return {"base_model": base_model, "adapter_digest": adapter_digest, "quantization": quantization,
            "ctranslate2": ctranslate2.__version__}


def current_ct2(out: Path, key: dict) -> bool:
    """Whether `out` holds a conversion built from `key`."""
    path = Path(out) / ENGINE_META
    if not path.exists():
        return False
    meta = json.loads(path.read_text())
    return all(meta.get(k) == v for k, v in key.items())


def ensure_ct2(model: Any, tokenizer: Any, out: Path, key: dict) -> tuple[Path, bool]:
    """The converted folder for `key` at `out`: (path, whether it was (re)built now)."""
    if current_ct2(out, key):
        return Path(out), False
    return export_ct2(model, tokenizer, out, key, key.get("quantization", "int8")), True


def as_engine(llm: Any) -> Engine:
    """An `Engine` as it is, or a `LoadedLLM` (model + tokenizer) on the torch engine."""
    if hasattr(llm, "letter_scores") and hasattr(llm, "generate") and hasattr(llm, "name"):
        return llm
    return TorchEngine(llm.model, llm.tokenizer)


def resolve_engine(kind: str) -> str:
    """The engine `kind` runs on here: `auto` is `torch-bf16` on a CPU with native bf16 (`native_bf16`: the
    fastest scorer there, and the closest to fp32) and `ctranslate2` elsewhere; any other kind is itself."""
    if kind not in ENGINES:
        raise ValueError(f"unknown LLM engine {kind!r}: one of {', '.join(ENGINES)}")
    if kind == AUTO:
        return TORCH_BF16 if native_bf16() else CT2
    return kind


def open_engine(kind: str, path: Path, key: dict, reference: TorchEngine) -> tuple[Engine, str | None]:
    """The engine `kind` names over `reference` (the torch model and tokenizer): `auto` is `resolve_engine`'s
    choice for this CPU; `torch` is the reference itself; `torch-bf16` its merged bf16 copy (`bf16_engine`) where
    the CPU has native bf16, else the reference and the reason; `ctranslate2` is the conversion at `path` when it
    was built from `key` (the reference is its fallback for constrained decoding), else the reference, and the
    reason."""
    kind = resolve_engine(kind)
    if kind == TORCH:
        return reference, None
    if kind == TORCH_BF16:
        if not native_bf16():
            return reference, f"this CPU has no native bf16 (AVX512-BF16 or AMX): running on {reference.name}"
        return bf16_engine(reference), None
    if not current_ct2(path, key):
        return reference, (f"no CTranslate2 conversion of this adapter in {path} (materialize llm_engine): "
                           f"running on {reference.name}")
    return CT2Engine(path, reference.tokenizer, fallback=reference), None


def letter_parity(reference: Engine, other: Engine, texts: Sequence[str], n_letters: Sequence[int]) -> dict:
    """How closely `other` reproduces `reference`'s letter distributions on these prompts (`compare_letters`)."""
    if not texts:
        return {"prompts": 0}
    out = compare_letters(reference.letter_scores(texts, n_letters, 1), other.letter_scores(texts, n_letters, 1))
    return {"reference": reference.name, "engine": other.name, **out}


def compare_letters(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> dict:
    """Two engines' letter log-probabilities on the same prompts: the share with the same top letter, the mean and
    largest KL(a || b) in nats, a's median top-2 margin, and a's largest margin where the top letters differ."""
    top = [int(np.argmax(x)) == int(np.argmax(y)) for x, y in zip(a, b, strict=True)]
    kl = [float(np.sum(np.exp(x) * (x - y))) for x, y in zip(a, b, strict=True)]
    margin = [float(np.diff(np.sort(x)[-2:])[0]) if len(x) > 1 else 0.0 for x in a]
    flips = [m for m, same in zip(margin, top, strict=True) if not same]
    return {"prompts": len(top), "top1_agreement": float(np.mean(top)), "mean_kl": float(np.mean(kl)),
            "max_kl": float(np.max(kl)), "median_margin": float(np.median(margin)),
            "max_flip_margin": float(max(flips)) if flips else 0.0}
