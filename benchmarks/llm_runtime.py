"""The LLM's CPU runtime: today's torch path against the fast engine, side by side in one run, on real prompts.

Assumes the asset graph (with the llm group) already ran into `--workdir`; the fine-tuned adapter of that workdir is
the model measured. Prompts come from a seeded sample of its test targets, exactly as the `llm-candidates` and
`llm-generate-mixup` rows build them (the test fit's mixup + variants list, the as-of query memory).

Runtime table (ms per prompt, batch 1 unless said: serving's path):
- candidate scoring. The baseline is today's path before this runtime: torch fp32 (the last position only through
  the LM head) on v1 prompts (`full` candidate lines). The fast path (`--fast`) is torch with the adapter merged and
  bf16 weights (`torch-bf16`, on a CPU with native bf16) or CTranslate2 int8 (the instruction cached as a static
  prompt), on the default prompt (`compact` candidate lines). Every engine runs on both prompts, so the engine's
  share and the prompt's share of the speed-up are apart; torch under bf16 autocast is timed on the first `--side`
  prompts (batches are not: a CPU scores one prompt at a time, `models.llm.generate.letter_scores`); `--compute-types` adds CTranslate2 compute types
  from a float32 conversion.
- generation (the paper's sampling settings, `LIMITS.max_new_tokens` new tokens): torch fp32, CTranslate2 int8 and
  torch-bf16 one prompt at a time (serving's path), and torch fp32 and torch-bf16 in length-sorted batches of
  `--generate-batch` (the evaluation's path).
Parity: per engine, against torch fp32 on the same prompts: the share with the same top letter, the mean and largest
KL between the letter distributions, and how close torch's own call was where they disagree (its top-2 margin);
N@10 of `llm-candidates` for each engine and prompt; the share of generations with the same parsed ID. A sweep over
the candidate style and the prompt budget gives N@10 and cost of `llm-candidates` on the fast engine.

    python benchmarks/llm_runtime.py --workdir W [--prompts 200] [--generate 24]
        [--variants compact:512,compact:256] [--compute-types float32,int8_float32] [--json OUT]

`--json OUT` writes {"candidate_ms": {"baseline", "fast"}, "generate_ms": {"baseline", "fast"}, "top1_agreement",
"mean_kl", ...}; generate_ms's "fast" is the fast engine's better path per prompt (batched, where that is faster),
and "generate_ms_detail" has each.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.factories import LLM_BASE_MODE, as_of_memory, variant_scorer
from evaluation.llm import LLMCandidateScorer, PromptFactory
from evaluation.metrics import evaluate
from models.catalog import Catalog
from models.llm.engine import (
    TORCH_BF16,
    CT2Engine,
    TorchEngine,
    bf16_engine,
    compare_letters,
    engine_key,
    ensure_ct2,
    native_bf16,
)
from models.llm.generate import GenerateConfig
from models.llm.model import load_llm, tokenizer_corpus
from models.llm.prompt import LIMITS, CatalogItems, PromptConfig, build_prompt, parse_answer
from models.llm.train import load_adapter
from orchestration.resources import WorkdirResource
from serving.registry import file_digest


@dataclass
class Recorder:
    """An engine wrapper that keeps what it was asked, what it answered and how long the calls took."""

    engine: Any
    texts: list[str] = field(default_factory=list)
    n_letters: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def letter_scores(self, texts: list[str], n_letters: list[int], batch_size: int = 8) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.engine.letter_scores(texts, n_letters, batch_size)
        self.seconds += time.perf_counter() - t0
        self.texts += list(texts)
        self.n_letters += list(n_letters)
        self.scores += out
        return out

    def generate(self, texts: list[str], cfg: GenerateConfig = GenerateConfig(), tries: Any = None) -> list[str]:
        return self.engine.generate(texts, cfg, tries)


def per_prompt_ms(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0) / max(n, 1)


def main(workdir: Annotated[Path, typer.Option(help="Workdir the graph (with the llm group) ran into")] = Path("work"),
         prompts: Annotated[int, typer.Option(help="Seeded sample of test targets for candidate prompts")] = 200,
         generate: Annotated[int, typer.Option(help="Generation prompts timed on each engine")] = 24,
         generate_batch: Annotated[int, typer.Option(help="Also time torch generation in length-sorted batches of "
                                                     "this size (the evaluation's path; 1: off)")] = 8,
         side: Annotated[int, typer.Option(help="Prompts for the bf16-autocast row")] = 48,
         variants: Annotated[str, typer.Option(help="Candidate style:budget pairs swept on the fast engine")] =
         "compact:512,compact:256",
         compute_types: Annotated[str, typer.Option(help="More CTranslate2 compute types timed on the same prompts "
                                                    "(from a float32 conversion), e.g. float32,int8_float32")] = "",
         model: Annotated[str, typer.Option(help="Base LLM of the adapter")] = "smollm2-135m",
         fast_engine: Annotated[str, typer.Option("--fast", help="The engine of the 'fast' figures: torch-bf16 | "
                                                  "ctranslate2 | auto (torch-bf16 on a CPU with native bf16)")
                                ] = "auto",
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here")] = None,
         seed: int = 0) -> None:
    t_start = time.perf_counter()
    wd = WorkdirResource(workdir=str(workdir))
    lay = wd.layout
    catalog = Catalog.from_items(lay.read_items())
    targets = lay.test_targets()
    test = targets.iloc[np.sort(np.random.default_rng(seed).choice(len(targets), min(prompts, len(targets)),
                                                                   replace=False))].reset_index(drop=True)
    memory, items = as_of_memory(lay), CatalogItems(catalog.items)
    ranked = variant_scorer(lay, catalog, LLM_BASE_MODE, memory)  # the test fit's lists (rolling refits aside)
    factory = PromptFactory(memory)

    t0 = time.perf_counter()
    base = load_llm(model, corpus=tokenizer_corpus(catalog.items, pd.read_parquet(lay.eval_targets)))
    tuned = load_adapter(base.model, lay.llm_adapter)
    load_s = time.perf_counter() - t0
    reference = TorchEngine(tuned, base.tokenizer)
    t0 = time.perf_counter()
    path, built = ensure_ct2(tuned, base.tokenizer, lay.llm_engine, engine_key(model, file_digest(lay.llm_adapter)))
    convert_s = time.perf_counter() - t0
    ct2 = CT2Engine(path, base.tokenizer)
    bf16 = bf16_engine(reference) if native_bf16() else None  # the merged model in bf16 weights
    if fast_engine == "auto":
        fast_engine = TORCH_BF16 if bf16 is not None else "ctranslate2"
    if fast_engine == TORCH_BF16 and bf16 is None:
        raise typer.BadParameter("this CPU has no native bf16 (AVX512-BF16 or AMX)", param_hint="--fast")
    fast = bf16 if fast_engine == TORCH_BF16 else ct2
    typer.echo(f"{model} + the adapter of {workdir}: torch load {load_s:.0f} s; CTranslate2 conversion "
               f"{'built in ' + format(convert_s, '.0f') + ' s' if built else 'up to date'} ({path})")

    default = PromptConfig()

    def candidates(engine: Any, cfg: PromptConfig = default, batch_size: int = 1) -> tuple[dict, Recorder]:
        rec = Recorder(engine)
        scorer = LLMCandidateScorer(ranked, rec, factory, items, catalog, cfg, n=LIMITS.candidates, seed=seed,
                                    batch_size=batch_size)
        m = evaluate(f"llm-candidates ({engine.name}, {cfg.candidate_style}, budget {cfg.budget})", scorer, test,
                     catalog, batch_size=64, progress=True).metrics
        return m["overall"], rec

    # -- candidate scoring. Baseline: today's path (torch fp32, v1's full candidate lines, batch 1). Fast: the engine
    # on the default prompt. Both engines on both prompts, so the engine's and the prompt's shares are apart.
    v1 = replace(default, candidate_style="full")
    engines = [e for e in (reference, ct2, bf16) if e is not None]
    runs = {(e.name, c.candidate_style): candidates(e, c) for e in engines for c in (v1, default)}
    base_m, base_rec = runs[(reference.name, "full")]
    fast_m, fast_rec = runs[(fast.name, default.candidate_style)]
    n = len(base_rec.texts)

    def ms(rec: Recorder) -> float:
        return 1000 * rec.seconds / max(len(rec.texts), 1)

    def tokens(rec: Recorder) -> list[int]:
        return [len(base.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rec.texts]

    def parity(a: Recorder, b: Recorder) -> dict:
        assert a.texts == b.texts, "parity needs the same prompts"
        return compare_letters(a.scores, b.scores)

    rows = []  # (stage, engine, prompt, batch, prompts, mean tokens, ms per prompt)
    for (name, style), (_, rec) in runs.items():
        label = " (baseline)" if (name, style) == (reference.name, "full") else \
            " (fast)" if (name, style) == (fast.name, default.candidate_style) else ""
        rows.append(("candidates", name + label, f"{style}:{default.budget}", 1, len(rec.texts),
                     float(np.mean(tokens(rec))), ms(rec)))
    sub, sub_n = base_rec.texts[:side], base_rec.n_letters[:side]
    autocast = TorchEngine(tuned, base.tokenizer, bf16=True)
    rows.append(("candidates", autocast.name, f"full:{default.budget}", 1, len(sub),
                 float(np.mean(tokens(base_rec)[:side])),
                 per_prompt_ms(lambda: autocast.letter_scores(sub, sub_n, 1), len(sub))))
    parities = {}
    for e in engines[1:]:
        parities[f"{e.name}, full prompts"] = parity(base_rec, runs[(e.name, "full")][1])
        parities[f"{e.name}, {default.candidate_style} prompts"] = parity(
            runs[(reference.name, default.candidate_style)][1], runs[(e.name, default.candidate_style)][1])
    for ct in [c for c in compute_types.split(",") if c]:  # other compute types, from a float32 conversion
        with tempfile.TemporaryDirectory(prefix="fashionrec-ct2-") as tmp:
            conv, _ = ensure_ct2(tuned, base.tokenizer, Path(tmp) / "f32",
                                 engine_key(model, file_digest(lay.llm_adapter), "float32"))
            other = Recorder(CT2Engine(conv, base.tokenizer, compute_type=ct))
            other.letter_scores(base_rec.texts, base_rec.n_letters, 1)
        parities[f"{other.name} (float32 conversion), full prompts"] = parity(base_rec, other)
        rows.append(("candidates", other.name + " (float32 conversion)", f"full:{default.budget}", 1, n,
                     float(np.mean(tokens(base_rec))), ms(other)))

    # -- generation: the generation prompts of the first targets, the paper's sampling settings
    gen_texts = [build_prompt(i, items, base.tokenizer, default).text for i in factory.inputs(test.head(generate))]
    cfg = GenerateConfig(max_new_tokens=LIMITS.max_new_tokens, batch_size=1, seed=seed)
    answers: dict[str, list[str]] = {}

    def timed_generate(engine: Any) -> float:
        t1 = time.perf_counter()
        answers[engine.name] = engine.generate(gen_texts, cfg)
        return 1000 * (time.perf_counter() - t1) / max(len(gen_texts), 1)

    gen_ms = {e.name: timed_generate(e) for e in engines}
    gen_base, gen_fast = gen_ms[reference.name], gen_ms[fast.name]
    gen_tokens = float(np.mean([len(base.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in gen_texts]))
    rows += [("generate", e.name + (" (baseline)" if e is reference else " (fast, batch 1)" if e is fast else ""),
              f"-:{default.budget}", 1, len(gen_texts), gen_tokens, gen_ms[e.name]) for e in engines]
    # The evaluation's path: batches of prompts of similar length (decoding reads the weights once a step for the
    # batch). Torch only: CTranslate2 forwards a batch's prompts only to the shortest one's length, and decodes the
    # rest token by token (slower than one at a time).
    batched: dict[str, float] = {}
    if generate_batch > 1:
        cfg_b = replace(cfg, batch_size=generate_batch)
        for e in [e for e in (reference, bf16) if e is not None]:
            batched[e.name] = per_prompt_ms(lambda e=e: e.generate(gen_texts, cfg_b), len(gen_texts))
            rows.append(("generate", e.name + (" (fast, batched)" if e is fast else " (same batch)"),
                         f"-:{default.budget}", generate_batch, len(gen_texts), gen_tokens, batched[e.name]))
    gen_fast_batched = batched.get(fast.name)
    parsed = [(parse_answer(a).item_id, parse_answer(b).item_id)
              for a, b in zip(answers[reference.name], answers[fast.name], strict=True)]
    named = [(a, b) for a, b in parsed if a or b]  # an answer without an ID agrees with nothing
    same_id = float(np.mean([a == b for a, b in named])) if named else float("nan")

    # -- the candidate style and the prompt budget, on the fast engine
    sweep = []
    for v in variants.split(","):
        style, b = v.split(":")
        cfg_v = replace(default, candidate_style=style, budget=int(b))
        m, rec = runs[(fast.name, style)] if int(b) == default.budget else candidates(fast, cfg_v)
        sweep.append((style, int(b), float(np.mean(tokens(rec))), ms(rec), m["ndcg@10"], m["recall@10"]))

    typer.echo(f"\n{len(test)} test targets of {workdir} (seed {seed}): {n} candidate prompts, {len(gen_texts)} "
               f"generation prompts; base model {model} with the workdir's adapter; torch threads "
               f"{torch.get_num_threads()}\n")
    typer.echo("| stage | engine | prompt (style:budget) | batch | prompts | mean tokens | ms per prompt | speed-up |\n"
               "|---|---|---|---|---|---|---|---|")
    for stage, name, prompt, bs, k, toks, t in rows:
        ref = rows[0][6] if stage == "candidates" else gen_base
        typer.echo(f"| {stage} | {name} | {prompt} | {bs} | {k} | {toks:.0f} | {t:.0f} | {ref / t:.2f}x |")
    typer.echo("\nParity of the letter distributions with torch fp32 on the same prompts (margin: torch's top-2 "
               "log-prob gap):\n\n| engine | prompts | top letter agreement | mean KL | max KL | median margin | "
               "largest margin of a flip |\n|---|---|---|---|---|---|---|")
    for name, p in parities.items():
        typer.echo(f"| {name} | {p['prompts']} | {p['top1_agreement']:.3f} | {p['mean_kl']:.4f} | {p['max_kl']:.4f} | "
                   f"{p['median_margin']:.3f} | {p['max_flip_margin']:.3f} |")
    typer.echo("\nllm-candidates N@10 on these targets: " + ", ".join(
        f"{name} {style} {m['ndcg@10']:.4f}" for (name, style), (m, _) in runs.items())
        + f". Generation: {len(named)} of {len(parsed)} prompts got an ID from either engine, the same one on "
          f"{same_id:.2f} of those (sampled, temperature 0.05).")
    typer.echo(f"\nCandidate style and prompt budget (llm-candidates on {fast.name}; the default is "
               f"{default.candidate_style}:{default.budget}):\n\n| style | budget | mean tokens | ms per prompt | "
               "speed-up over the baseline | N@10 | R@10 |\n|---|---|---|---|---|---|---|")
    for style, b, toks, t, ndcg, rec10 in sweep:
        typer.echo(f"| {style} | {b} | {toks:.0f} | {t:.0f} | {rows[0][6] / t:.2f}x | {ndcg:.4f} | {rec10:.4f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    typer.echo(f"\ntotal {time.perf_counter() - t_start:.0f} s; peak RSS {peak:.2f} GB")
    if json_out:
        Path(json_out).write_text(json.dumps({
            "workdir": str(workdir), "base_model": model, "engine": fast.name, "candidate_prompts": n,
            "generate_prompts": len(gen_texts), "prompt": f"{default.candidate_style}:{default.budget}",
            "candidate_ms": {"baseline": rows[0][6], "fast": ms(fast_rec)},
            "generate_ms": {"baseline": gen_base, "fast": min(gen_fast, gen_fast_batched or gen_fast)},
            "generate_ms_detail": {"baseline (fp32, batch 1)": gen_base, "fast, batch 1 (serving)": gen_fast,
                                   f"fast, batch {generate_batch} (evaluation)": gen_fast_batched,
                                   f"fp32, batch {generate_batch}": batched.get(reference.name)},
            "top1_agreement": parities[f"{fast.name}, full prompts"]["top1_agreement"],
            "parity": parities, "same_generated_id": same_id,
            "ndcg@10": {f"{name} {style}": m["ndcg@10"] for (name, style), (m, _) in runs.items()},
            "rows": [dict(zip(("stage", "engine", "prompt", "batch", "prompts", "mean_tokens", "ms"), r, strict=True))
                     for r in rows],
            "variants": [{"style": st, "budget": b, "mean_tokens": t, "ms": m_, "ndcg@10": nd, "recall@10": r}
                         for st, b, t, m_, nd, r in sweep],
        }, indent=1))

if __name__ == "__main__":
    typer.run(main)
