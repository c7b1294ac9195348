"""The LLM engines on the tiny model (random weights, a real LoRA adapter with non-zero weights): the CTranslate2
conversion of the merged adapter scores letters like torch, its cached instruction prefix changes nothing, it is
rebuilt when the adapter changes and only then, and constrained generation keeps catalog answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.llm.engine import (
    ENGINE_META,
    CT2Engine,
    TorchEngine,
    engine_key,
    ensure_ct2,
    letter_parity,
    merged_model,
    open_engine,
    static_prefix,
)
from models.llm.generate import GenerateConfig, IdTrie
from models.llm.model import TINY, add_lora, load_llm
from models.llm.prompt import PromptConfig, build_prompt, candidate_block
from tests.models.test_llm import FOOTWEAR, Table, corpus, history


def perturbed(seed: int = 0):  # noqa: ANN201
    """The tiny model with a LoRA adapter whose B matrices are non-zero (a fresh adapter is a no-op)."""
    llm = add_lora(load_llm(TINY, corpus=corpus()))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in llm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    llm.model.eval()
    return llm


@pytest.fixture(scope="module")
def tuned():  # noqa: ANN201
    return perturbed()


@pytest.fixture(scope="module")
def converted(tuned, tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("ct2")
    out = {}
    for q in ("float32", "int8"):
        out[q], built = ensure_ct2(tuned.model, tuned.tokenizer, root / q, engine_key(TINY, "adapter-a", q))
        assert built
    return out


def candidate_prompts(tok, n: int = 6) -> tuple[list[str], list[int]]:  # noqa: ANN001
    texts, sizes = [], []
    for k in range(n):
        shown = FOOTWEAR[k % 3: k % 3 + 3 + k % 4]
        texts.append(build_prompt(history(1 + k % 4), Table(), tok,
                                  candidates=candidate_block(shown, Table(), PromptConfig())).text)
        sizes.append(len(shown))
    return texts, sizes


def test_merging_keeps_the_adapters_outputs(tuned) -> None:  # noqa: ANN001
    ids = tuned.tokenizer("ID: SKU001\nTitle: red sneaker", return_tensors="pt")["input_ids"]
    merged = merged_model(tuned.model)
    with torch.no_grad():
        a, b = tuned.model(input_ids=ids).logits, merged(input_ids=ids).logits
        with tuned.model.disable_adapter():
            c = tuned.model(input_ids=ids).logits  # the weights without the adapter's contribution
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (a - c).abs().max() > 1e-2  # the adapter does change the outputs, so the check above means something


def test_ct2_letter_scores_match_torch(tuned, converted) -> None:  # noqa: ANN001
    texts, sizes = candidate_prompts(tuned.tokenizer)
    ref = TorchEngine(tuned.model, tuned.tokenizer)
    exact = CT2Engine(converted["float32"], tuned.tokenizer, compute_type="float32")
    for x, y in zip(ref.letter_scores(texts, sizes), exact.letter_scores(texts, sizes), strict=True):
        np.testing.assert_allclose(x, y, atol=2e-4)
    parity = letter_parity(ref, CT2Engine(converted["int8"], tuned.tokenizer), texts, sizes)
    assert parity["prompts"] == len(texts) and parity["engine"] == "ctranslate2-int8"
    assert parity["mean_kl"] < 0.05  # int8 weights: close to fp32, not equal


def test_the_cached_instruction_prefix_gives_the_same_scores(tuned, converted, monkeypatch) -> None:  # noqa: ANN001
    texts, sizes = candidate_prompts(tuned.tokenizer)
    engine = CT2Engine(converted["float32"], tuned.tokenizer, compute_type="float32")
    p = static_prefix(tuned.tokenizer, texts)
    head = texts[0][: texts[0].index("<|im_end|>") + len("<|im_end|>")]
    assert p == len(tuned.tokenizer(head, add_special_tokens=False)["input_ids"]) and p > 20
    static, rest = engine._tokens(texts)
    assert static is not None and len(static) == p and all(len(r) > 0 for r in rest)
    cached = engine.letter_scores(texts, sizes)
    monkeypatch.setattr("models.llm.engine.static_prefix", lambda tok, texts: 0)
    assert engine._tokens(texts)[0] is None
    uncached = engine.letter_scores(texts, sizes)
    for x, y in zip(cached, uncached, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert static_prefix(tuned.tokenizer, [texts[0], "<|im_start|>system\nother<|im_end|>\n"]) == 0


def test_the_conversion_is_rebuilt_when_the_adapter_changes_and_only_then(tuned, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "engine"
    key = engine_key(TINY, "adapter-a", "float32")
    ensure_ct2(tuned.model, tuned.tokenizer, out, key)
    stamp = (out / ENGINE_META).stat().st_mtime_ns
    assert ensure_ct2(tuned.model, tuned.tokenizer, out, key) == (out, False)
    assert (out / ENGINE_META).stat().st_mtime_ns == stamp
    other = perturbed(seed=1)
    texts, sizes = candidate_prompts(tuned.tokenizer, 3)
    before = CT2Engine(out, tuned.tokenizer, compute_type="float32").letter_scores(texts, sizes)
    _, built = ensure_ct2(other.model, other.tokenizer, out, engine_key(TINY, "adapter-b", "float32"))
    assert built and json.loads((out / ENGINE_META).read_text())["adapter_digest"] == "adapter-b"
    after = CT2Engine(out, tuned.tokenizer, compute_type="float32").letter_scores(texts, sizes)
    want = TorchEngine(other.model, other.tokenizer).letter_scores(texts, sizes)
    for a, b, w in zip(before, after, want, strict=True):
        np.testing.assert_allclose(b, w, atol=2e-4)
        assert np.abs(a - b).max() > 1e-3
    assert not list(tmp_path.glob("*.tmp"))  # the staging folder is gone


def test_open_engine_uses_a_current_conversion_else_torch_with_the_reason(tuned, converted) -> None:  # noqa: ANN001
    ref = TorchEngine(tuned.model, tuned.tokenizer)
    engine, note = open_engine("ctranslate2", converted["int8"], engine_key(TINY, "adapter-a", "int8"), ref)
    assert engine.name == "ctranslate2-int8" and note is None
    engine, note = open_engine("ctranslate2", converted["int8"], engine_key(TINY, "adapter-z", "int8"), ref)
    assert engine is ref and "materialize llm_engine" in note
    assert open_engine("torch", converted["int8"], engine_key(TINY, "adapter-a", "int8"), ref) == (ref, None)
    with pytest.raises(ValueError, match="unknown LLM engine"):
        open_engine("vllm", converted["int8"], {}, ref)


def test_constrained_generation_keeps_catalog_answers_and_redoes_the_rest_on_torch(tuned, converted) -> None:  # noqa: ANN001
    texts = [build_prompt(history(k), Table(), tuned.tokenizer).text for k in range(1, 5)]
    trie = IdTrie(tuned.tokenizer, FOOTWEAR)
    assert trie.follows(f"ID: {FOOTWEAR[0]}\nTitle: x") and not trie.follows(f"ID: {FOOTWEAR[0]}")
    assert not trie.follows("ID: SKU999\nTitle: x") and not trie.follows(f"Title: x\nID: {FOOTWEAR[0]}\n")
    cfg = GenerateConfig(max_new_tokens=16, do_sample=False)
    ref = TorchEngine(tuned.model, tuned.tokenizer)
    free = CT2Engine(converted["float32"], tuned.tokenizer, compute_type="float32").generate(texts, cfg)
    assert free == ref.generate(texts, cfg)  # greedy: the same answers as torch
    engine = CT2Engine(converted["float32"], tuned.tokenizer, compute_type="float32", fallback=ref)
    out = engine.generate(texts, cfg, [trie] * len(texts))
    assert all(trie.follows(o) for o in out)
    redone = [i for i, f in enumerate(free) if not trie.follows(f)]
    assert engine.constrained_on_torch == len(redone) > 0  # the random model leaves the catalog by itself
    want = ref.generate([texts[i] for i in redone], cfg, [trie] * len(redone))
    assert [out[i] for i in redone] == want
    assert engine.on_trie == (len(texts) - len(redone), len(texts))
    # Once TRIAL rows were tried and most left the trie, constrained rows go to torch directly (not decoded twice).
    engine.on_trie = (0, CT2Engine.TRIAL)
    assert not engine.engine_first()
    again = engine.generate(texts, cfg, [trie] * len(texts))
    assert again == ref.generate(texts, cfg, [trie] * len(texts)) and engine.on_trie == (0, CT2Engine.TRIAL)
    engine.on_trie = (CT2Engine.TRIAL // 2, CT2Engine.TRIAL)
    assert engine.engine_first()
    with pytest.raises(ValueError, match="torch engine"):
        CT2Engine(converted["float32"], tuned.tokenizer, compute_type="float32").generate(texts, cfg,
                                                                                         [trie] * len(texts))


def test_bf16_engine_scores_letters_close_to_fp32_and_generates_on_the_trie(tuned, monkeypatch) -> None:  # noqa: ANN001
    from models.llm.engine import TORCH_BF16, bf16_engine

    texts, sizes = candidate_prompts(tuned.tokenizer)
    ref = TorchEngine(tuned.model, tuned.tokenizer)
    fast = bf16_engine(ref)
    assert fast.name == TORCH_BF16 and next(fast.model.parameters()).dtype == torch.bfloat16
    assert next(ref.model.parameters()).dtype == torch.float32  # the reference is untouched
    parity = letter_parity(ref, fast, texts, sizes)
    assert parity["prompts"] == len(texts) and parity["engine"] == TORCH_BF16
    assert 0 < parity["mean_kl"] < 0.05  # bf16 weights: close to fp32, not equal
    trie = IdTrie(tuned.tokenizer, FOOTWEAR[:3])
    answer = fast.generate(texts[:1], GenerateConfig(max_new_tokens=24, do_sample=False), [trie])[0]
    assert trie.follows(answer)  # constrained decoding runs on this engine itself: no fallback needed
    # open_engine: the bf16 copy where the CPU multiplies bf16 natively, else the reference and the reason
    monkeypatch.setattr("models.llm.engine.native_bf16", lambda: False)
    engine, note = open_engine(TORCH_BF16, Path("unused"), {}, ref)
    assert engine is ref and "no native bf16" in note
    monkeypatch.setattr("models.llm.engine.native_bf16", lambda: True)
    engine, note = open_engine(TORCH_BF16, Path("unused"), {}, ref)
    assert engine.name == TORCH_BF16 and note is None



def test_auto_runs_on_bf16_where_the_cpu_has_it_and_on_the_conversion_elsewhere(tuned, converted, monkeypatch
                                                                                 ) -> None:  # noqa: ANN001
    from models.llm.engine import AUTO, CT2, TORCH, TORCH_BF16, resolve_engine

    ref = TorchEngine(tuned.model, tuned.tokenizer)
    key = engine_key(TINY, "adapter-a", "int8")
    monkeypatch.setattr("models.llm.engine.native_bf16", lambda: True)
    assert resolve_engine(AUTO) == TORCH_BF16
    engine, note = open_engine(AUTO, converted["int8"], key, ref)
    assert engine.name == TORCH_BF16 and note is None
    monkeypatch.setattr("models.llm.engine.native_bf16", lambda: False)
    assert resolve_engine(AUTO) == CT2 and resolve_engine(TORCH) == TORCH
    engine, note = open_engine(AUTO, converted["int8"], key, ref)
    assert engine.name == "ctranslate2-int8" and note is None
    engine, note = open_engine(AUTO, converted["int8"], engine_key(TINY, "adapter-z", "int8"), ref)
    assert engine is ref and "materialize llm_engine" in note  # a stale conversion: the reference, and why
    with pytest.raises(ValueError, match="unknown LLM engine"):
        resolve_engine("onnx")
