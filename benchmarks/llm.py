"""The LLM stage against the retrieval-only bests, on one seeded sample of test targets, in one run.

Assumes the asset graph (with the text group) already ran into `--workdir`. Every row is scored on the same targets:

- last-search, title-only + variants, mixup + variants (the retrieval-only rows);
- llm-generate-mixup (the paper's full framework) with and without catalog-constrained decoding;
- llm-candidates (fine-tuned) and llm-candidates zero-shot (the base model, no adapter).

Columns: R@10, N@10, MRR, cold R@10, and for the generation rows the format-violation rate, the valid-catalog-ID
rate and the exact-item and family hit rates of the generated answer; for candidate rows the candidate recall and
the position bias. A learning curve trains candidate scoring on 25%, 50% and 100% of the prompt budget. Prints wall
time per step and peak RSS.

    python benchmarks/llm.py --workdir W --data ../shared/data/synthetic/medium-s0 [--model smollm2-135m]
        [--targets 1000] [--train-prompts 600] [--train-seconds 3600] [--curve 0.25,0.5,1]

On this 2-core CPU, SmolLM2-135M generation takes about 1-2 s per target and candidate scoring about 1 s, so the
full benchmark (1,000 targets, an hour of training) takes several hours; `--targets 100 --train-seconds 300` is a
15-minute smoke run.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from evaluation.factories import retrieval_scorer
from evaluation.llm import (
    LLMCandidateScorer,
    LLMGenerateScorer,
    PromptFactory,
    candidate_summary,
    generation_summary,
    training_prompts,
)
from evaluation.metrics import evaluate
from evaluation.periods import by_fit, parts
from evaluation.retrieval import VariantScorer
from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from feature_repo.splits import fit_layouts
from models.catalog import Catalog
from models.llm.generate import GenerateConfig
from models.llm.model import LoadedLLM, add_lora, load_llm
from models.llm.prompt import CatalogItems, Prompt, PromptConfig
from models.llm.train import LLMTrainConfig, fine_tune, response_perplexity, schedule
from models.retrieval import RetrievalConfig
from models.seqrec import ID_MODEL, load_checkpoint
from models.seqrec.vectors import trained_id_vectors
from models.text import load_title_model
from models.text.memory import AsOfMemory
from models.variants import VariantRanker
from orchestration.resources import WorkdirResource


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(df) <= n:
        return df.reset_index(drop=True)
    return df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))].reset_index(drop=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(workdir: Annotated[Path, typer.Option(help="Workdir the graph ran into")] = Path("work"),
         data: Annotated[Path, typer.Option(help="Dataset dir (for the ceiling)")] = Path("feature_repo/sample"),
         model: Annotated[str, typer.Option(help="Base LLM")] = "smollm2-135m",
         targets: Annotated[int, typer.Option(help="Seeded sample of test targets")] = 1000,
         train_prompts: Annotated[int, typer.Option(help="Validation targets turned into prompts")] = 600,
         train_seconds: Annotated[float, typer.Option(help="Fine-tuning time budget at 100%")] = 3600.0,
         curve: Annotated[str, typer.Option(help="Shares of the prompt budget for the learning curve")] = "0.25,0.5,1",
         lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-4,
         batch_size: Annotated[int, typer.Option(help="Prompts per step and per inference batch")] = 4,
         seed: int = 0) -> None:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    wd = WorkdirResource(workdir=str(workdir))
    tables = CanonicalTables.read(wd.canonical)
    catalog = Catalog.from_items(tables.items)
    all_targets = pd.read_parquet(wd.layout.eval_targets)
    test = sample(all_targets[all_targets["split"] == "test"], targets, seed)
    val = sample(all_targets[all_targets["split"] == "val"], train_prompts, seed)
    t0 = time.perf_counter()
    memory = AsOfMemory.build(tables.search_results, load_title_model(wd.layout.title_model))
    val_memory = AsOfMemory.build(tables.search_results, load_title_model(wd.layout.at("val").title_model))
    ranker = VariantRanker.load(wd.layout.variant_ranker)
    # Test rows: each target through the ID model's fit of its period (rolling refits: `evaluation.periods`).
    mixups = {lay: VariantScorer(retrieval_scorer(lay, catalog, RetrievalConfig(mode="mixup", n=1), memory), catalog,
                                 ranker) for _, lay in fit_layouts(wd.layout)}
    mixup = by_fit(wd.layout, lambda lay: mixups[lay])
    # Training prompts show the val fit's lists (as the `llm_prompts` asset); the test targets the test fit's.
    val_mixup = VariantScorer(retrieval_scorer(wd.layout.at("val"), catalog, RetrievalConfig(mode="mixup", n=1),
                                               val_memory), catalog, ranker)
    title = by_fit(wd.layout, lambda lay: VariantScorer(
        retrieval_scorer(lay, catalog, RetrievalConfig(mode="title_only"), memory), catalog, ranker))
    pop = PopularityScorer(tables.events, catalog, PopularityConfig())
    items = CatalogItems(catalog.items)
    factory = PromptFactory(memory)
    timings["setup"] = time.perf_counter() - t0
    rows: list[tuple[str, dict, dict]] = []

    def run(name: str, scorer: object, extra: dict | None = None) -> dict:
        t1 = time.perf_counter()
        m = evaluate(name, scorer, test, catalog, batch_size=batch_size * 8, progress=True).metrics  # type: ignore[arg-type]
        timings[name] = time.perf_counter() - t1
        rows.append((name, m, extra() if callable(extra) else (extra or {})))
        typer.echo(f"{name}: N@10 {m['overall']['ndcg@10']:.4f} ({timings[name]:.0f} s)")
        return m

    run("last-search", LastSearchScorer(tables.search_results, pop, catalog))
    run("title-only + variants", title)
    run("mixup + variants", mixup)

    def fresh() -> LoadedLLM:
        return load_llm(model, corpus=[*catalog.items["title"].astype(str).head(5000), *catalog.item_ids[:5000]])

    t0 = time.perf_counter()
    base = fresh()
    cfg = PromptConfig()
    df = training_prompts(val, val_mixup, PromptFactory(val_memory), items, catalog, base.tokenizer, cfg, seed=seed)
    prompts = [Prompt(t, r, int(n), 0, int(d)) for t, r, n, d in
               zip(df["text"], df["response"], df["n_tokens"], df["n_dropped"], strict=True)]
    ppl = response_perplexity(base.model, base.tokenizer, prompts, batch_size=batch_size, progress=True)
    timings["prompts + perplexity"] = time.perf_counter() - t0
    typer.echo(f"{len(prompts)} training prompts ({(df['kind'] == 'candidates').sum()} candidate prompts) "
               f"from {len(val)} validation targets")

    def candidates(llm_: LoadedLLM):  # noqa: ANN202 - an LLMCandidateScorer per fit, or their PeriodScorer
        return by_fit(wd.layout, lambda lay: LLMCandidateScorer(mixups[lay], llm_, factory, items, catalog, cfg,
                                                                batch_size=batch_size, seed=seed))

    zero = candidates(base)
    run("llm-candidates zero-shot", zero, lambda: candidate_summary(parts(zero)))

    curve_rows = []
    tuned: LoadedLLM | None = None
    for share in [float(x) for x in curve.split(",")]:
        n = max(1, int(round(share * len(prompts))))
        llm_ = add_lora(fresh())
        order = [i for i in schedule(ppl[:n], LLMTrainConfig(seed=seed))]
        t1 = time.perf_counter()
        res = fine_tune(llm_.model, llm_.tokenizer, prompts[:n], LLMTrainConfig(
            lr=lr, batch_size=batch_size, max_seconds=train_seconds * share, seed=seed), order)
        timings[f"fine-tune {share:.0%}"] = time.perf_counter() - t1
        scorer = candidates(llm_)
        m = run(f"llm-candidates ({share:.0%} of prompts)", scorer, lambda s=scorer: candidate_summary(parts(s)))
        curve_rows.append((share, n, res.steps, res.seconds, m["overall"]["ndcg@10"]))
        tuned = llm_

    assert tuned is not None
    encoder = load_title_model(wd.layout.title_model)

    def generator(lay: Layout, constrained: bool) -> LLMGenerateScorer:
        ckpt = load_checkpoint(lay.model(ID_MODEL))
        return LLMGenerateScorer(mixups[lay].base, tuned, factory, items, encoder,
                                 trained_id_vectors(ckpt.model, ckpt.vocab), cfg,
                                 GenerateConfig(batch_size=batch_size, seed=seed), constrained=constrained)

    for constrained in (False, True):
        gen = by_fit(wd.layout, lambda lay, c=constrained: generator(lay, c))
        run("llm-generate-mixup" + (" (constrained)" if constrained else ""), gen,
            lambda g=gen: generation_summary([r for p in parts(g) for r in p.records], catalog))

    typer.echo(f"\n{len(test)} test targets (seed {seed}), {workdir}; base model {tuned.name}; "
               f"{tuned.info.get('trainable_parameters')} trainable LoRA parameters\n")
    typer.echo("| method | R@10 | N@10 | MRR | cold R@10 | format viol. | valid ID | exact hit | family hit | "
               "cand. recall | top letter A (unbiased) |")
    typer.echo("|" + "---|" * 11)
    for name, m, x in rows:
        a, c = m["overall"], m["cold_start"]

        def f(key: str, x: dict = x) -> str:
            return f"{x[key]:.3f}" if key in x else ""

        bias = f"{x['top_letter_A']:.2f} ({x['top_letter_A_unbiased']:.2f})" if "top_letter_A" in x else ""
        typer.echo(f"| {name} | {a['recall@10']:.4f} | {a['ndcg@10']:.4f} | {a['mrr']:.4f} | {c['recall@10']:.4f} | "
                   f"{f('format_violation_rate')} | {f('valid_catalog_id_rate')} | {f('exact_item_hit_rate')} | "
                   f"{f('family_hit_rate')} | {f('candidate_recall')} | {bias} |")
    typer.echo("\nLearning curve (candidate scoring):\n\n| share | prompts | steps | train s | N@10 |\n|---|---|---|---|---|")
    for share, n, steps, secs, ndcg in curve_rows:
        typer.echo(f"| {share:.0%} | {n} | {steps} | {secs:.0f} | {ndcg:.4f} |")
    typer.echo("\nWall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    typer.echo(f"total {time.perf_counter() - t_start:.0f} s; peak RSS {peak_rss_gb():.2f} GB; torch threads "
               f"{torch.get_num_threads()}")


if __name__ == "__main__":
    typer.run(main)
