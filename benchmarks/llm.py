"""The LLM stage against the retrieval-only bests and the learned ranker, on one seeded sample of test targets.

Assumes the asset graph ran into `--workdir` (the `ranker` asset with this code: the benchmark reads its
out-of-fold validation lists, `models/ranker_val_top.parquet`). Every row is scored on the same test targets:

- last-search, title-only + variants, mixup + variants (the retrieval-only rows), and `ranker`;
- `ranker-llm`: the LLM scores the ranker's top 20 and a second LambdaMART pass re-orders them
  (`models.ranker.llm_pass`), fitted on validation lists the LLM was not fine-tuned on;
- llm-candidates zero-shot (the base model) and fine-tuned (over the mixup + variants list);
- llm-generate-mixup (the paper's framework), free and catalog-constrained, on `--generate-targets` of them;
- Table 3's ablations of it on the same targets (`--ablations`, `evaluation.suite.LLM_GENERATION_ABLATIONS`): w/o
  product attributes, w/o the memory, w/o the text or the ID embedding, the paper's two combinations, MiniLM in
  place of the LSTM; the prompt switches act at inference, on the adapter tuned on full prompts.

Columns: R@10, N@10, MRR, cold R@10; for generation rows the format-violation and valid-catalog-ID rates and the
exact-item and family hit rates; for candidate rows the candidate recall and the position bias (top letter A
against 1/n). The learning curve fine-tunes on 25%, 50% and 100% of the training budget (prompts and seconds) and
fits and scores `ranker-llm` at each point. Prints wall time per step and peak RSS; `--json OUT` writes it all.

    python benchmarks/llm.py --workdir W --data ../shared/data/synthetic/medium-s0 [--targets 1000]
        [--train-prompts 600] [--rank-lists 600] [--train-seconds 1800] [--curve 0.25,0.5,1]
        [--generate-targets 200] [--engine auto|ctranslate2|torch-bf16|torch] [--device cpu|cuda] [--bf16 | --qlora]

Scoring and generation run on `--engine` (`auto` by default: on a CPU with native bf16 each fine-tuned adapter is
merged into a bf16 copy, elsewhere merged and converted to CTranslate2 int8, `models.llm.engine`); training and
perplexity on torch. On a 2-core CPU a candidate prompt costs about 0.4 s on torch-bf16 (0.6-0.9 s on CTranslate2)
and a generated answer about 0.9 s in batches of 8 (benchmarks/llm_runtime.py), and training sees about 12 prompts a
minute; `--targets 100 --rank-lists 100 --train-seconds 300 --curve 1` is a 25-minute smoke run.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import typer

from evaluation.baselines import LastSearchScorer, PopularityConfig, PopularityScorer
from evaluation.factories import ranker_scorer, retrieval_scorer
from evaluation.llm import (
    LLMCandidateScorer,
    LLMGenerateScorer,
    PromptFactory,
    RankerLLMScorer,
    candidate_summary,
    fit_second_pass,
    generation_summary,
    moment_keys,
    training_prompts,
)
from evaluation.metrics import evaluate
from evaluation.periods import by_fit, parts
from evaluation.retrieval import VariantScorer
from evaluation.suite import (
    LLM_GENERATION_ABLATIONS,
    PRETRAINED,
    llm_ablations,
    llm_generation_ablation,
    pretrained_text,
)
from feature_repo.layout import Layout
from feature_repo.schema import CanonicalTables
from feature_repo.splits import fit_layouts
from models.catalog import Catalog
from models.llm.engine import (
    AUTO,
    CT2,
    TORCH_BF16,
    CT2Engine,
    Engine,
    TorchEngine,
    bf16_engine,
    engine_key,
    ensure_ct2,
    native_bf16,
    resolve_engine,
)
from models.llm.generate import GenerateConfig
from models.llm.model import SMOLLM2, LoadedLLM, add_lora, load_llm, smollm2_cache
from models.llm.prompt import LIMITS, PROMPT_VERSION, CatalogItems, Prompt, PromptConfig
from models.llm.train import LLMTrainConfig, fine_tune, response_perplexity, schedule
from models.ranker.model import LearnedRanker
from models.retrieval import RetrievalConfig
from models.seqrec import ID_MODEL, load_checkpoint
from models.seqrec.vectors import trained_id_vectors
from models.text import load_title_model
from models.text.memory import AsOfMemory
from models.variants import VariantRanker
from orchestration.resources import WorkdirResource


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if n < 0 or len(df) <= n:
        return df.reset_index(drop=True)
    return df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))].reset_index(drop=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(workdir: Annotated[Path, typer.Option(help="Workdir the graph ran into")] = Path("work"),
         data: Annotated[Path, typer.Option(help="Dataset dir (for the ceiling)")] = Path("feature_repo/sample"),
         model: Annotated[str, typer.Option(help="Base LLM")] = "smollm2-135m",
         targets: Annotated[int, typer.Option(help="Seeded sample of test targets")] = 1000,
         generate_targets: Annotated[int, typer.Option(help="The first N of them for the generation rows "
                                                             "(-1: all)")] = 200,
         train_prompts: Annotated[int, typer.Option(help="Validation targets turned into prompts (-1: all)")] = 600,
         rank_lists: Annotated[int, typer.Option(help="Validation lists (not prompted) the 2nd pass fits on")] = 600,
         train_seconds: Annotated[float, typer.Option(help="Fine-tuning time budget at 100%")] = 1800.0,
         curve: Annotated[str, typer.Option(help="Shares of the training budget for the learning curve")] = "0.25,0.5,1",
         curve_targets: Annotated[int, typer.Option(help="The first N test targets for the curve's earlier points' "
                                                         "ranker-llm rows, beside the ranker on the same N (-1: all)")
                                  ] = -1,
         lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-4,
         batch_size: Annotated[int, typer.Option(help="Prompts per training step")] = 4,
         infer_batch: Annotated[int, typer.Option(help="Prompts per generation batch (and scoring batch on CUDA; "
                                                       "a CPU scores one prompt at a time)")] = 8,
         engine: Annotated[str, typer.Option(help="auto (torch-bf16 on a CPU with native bf16, else ctranslate2) | "
                                                  "ctranslate2 (int8, CPU) | torch-bf16 | torch")] = AUTO,
         device: Annotated[str, typer.Option(help="cpu | cuda (training, perplexity and the torch engine)")] = "cpu",
         bf16: Annotated[bool, typer.Option(help="Train and score in bf16 (CUDA)")] = False,
         qlora: Annotated[bool, typer.Option(help="QLoRA: the base in 4-bit NF4 storage (CUDA; SmolLM2 is read "
                                                  "from its fp32 cache)")] = False,
         ablations: Annotated[bool, typer.Option(help="Table 3's ablation rows on llm-generate-mixup (the "
                                                      "generation sample, the same adapter)")] = True,
         json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
         seed: int = 0) -> None:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    runs_on = resolve_engine(engine) if device == "cpu" else "torch"  # CUDA: the torch model as trained
    wd = WorkdirResource(workdir=str(workdir))
    lay = wd.layout
    if not lay.ranker_val_top.exists():
        raise typer.BadParameter(f"{lay.ranker_val_top} is missing: materialize the `ranker` asset with this code "
                                 "(its out-of-fold validation lists)", param_hint="--workdir")
    tables = CanonicalTables.read(wd.canonical)
    catalog = Catalog.from_items(tables.items)
    all_targets = pd.read_parquet(lay.eval_targets)
    test = sample(all_targets[all_targets["split"] == "test"], targets, seed)
    val = lay.val_targets()
    prompted = sample(val, train_prompts, seed)
    top = pd.read_parquet(lay.ranker_val_top)
    by_key = dict(zip(zip(moment_keys(top), top["target_item_id"], strict=True), top["items"], strict=True))
    lists = [list(by_key.get((k, t), ())) for k, t in zip(moment_keys(prompted), prompted["target_item_id"],
                                                            strict=True)]
    tuned_on = set(moment_keys(prompted))
    fresh_lists = top[[k not in tuned_on for k in moment_keys(top)]]
    rank_train = sample(fresh_lists[fresh_lists["hit"]], rank_lists, seed + 1)

    t0 = time.perf_counter()
    memory = AsOfMemory.build(tables.search_results, load_title_model(lay.title_model))
    val_memory = AsOfMemory.build(tables.search_results, load_title_model(lay.at("val").title_model))
    variants = VariantRanker.load(lay.variant_ranker)
    first = LearnedRanker.load(lay.ranker)
    # Test rows: each target through the ID model's fit of its period (rolling refits: `evaluation.periods`).
    mixups = {fit: VariantScorer(retrieval_scorer(fit, catalog, RetrievalConfig(mode="mixup", n=1), memory), catalog,
                                 variants) for _, fit in fit_layouts(lay)}
    title = by_fit(lay, lambda fit: VariantScorer(
        retrieval_scorer(fit, catalog, RetrievalConfig(mode="title_only"), memory), catalog, variants))
    pop = PopularityScorer(tables.events, catalog, PopularityConfig())
    items = CatalogItems(catalog.items)
    factory = PromptFactory(memory)
    cfg = PromptConfig()
    timings["setup"] = time.perf_counter() - t0
    rows: list[tuple[str, dict, dict]] = []

    curve_rows: list[dict] = []

    def save(complete: bool) -> None:
        """The results so far (`--json`): a run stopped part way keeps every row it finished."""
        if json_out is not None:
            json_out.write_text(json.dumps({
                "complete": complete, "targets": len(test), "seed": seed, "base_model": model, "engine": runs_on,
                "device": device,
                "rows": [{"method": n, "overall": m["overall"], "cold_start": m["cold_start"], **x} for n, m, x in rows],
                "curve": curve_rows, "timings": timings, "total_seconds": time.perf_counter() - t_start,
                "peak_rss_gb": peak_rss_gb()}, indent=1, default=float))

    def run(name: str, scorer: object, extra: object = None, on: pd.DataFrame = test) -> dict:
        t1 = time.perf_counter()
        m = evaluate(name, scorer, on, catalog, batch_size=infer_batch, progress=True).metrics  # type: ignore[arg-type]
        timings[name] = time.perf_counter() - t1
        rows.append((name, m, extra() if callable(extra) else (extra or {})))
        typer.echo(f"{name}: N@10 {m['overall']['ndcg@10']:.4f} on {m['overall']['n']} targets ({timings[name]:.0f} s)")
        save(complete=False)
        return m

    run("last-search", LastSearchScorer(tables.search_results, pop, catalog))
    run("title-only + variants", title)
    run("mixup + variants", by_fit(lay, lambda fit: mixups[fit]))
    ranker_m = run("ranker", by_fit(lay, lambda fit: ranker_scorer(fit, catalog, first, memory=memory)))

    corpus = [*catalog.items["title"].astype(str).head(5000), *catalog.item_ids[:5000]]
    source = model
    if qlora and model == SMOLLM2:
        load_llm(SMOLLM2)  # writes the fp32 cache that the 4-bit load reads
        source = str(smollm2_cache())

    def fresh() -> LoadedLLM:
        if qlora:
            llm_ = load_llm(source, device=device, quantize="4bit")
            llm_.name = model
            return llm_
        llm_ = load_llm(model, corpus=corpus, device=device)
        if bf16:
            llm_.model.to(torch.bfloat16)
        return llm_

    conversions = Path(tempfile.mkdtemp(prefix="fashionrec-bench-ct2-"))

    def as_engine(llm_: LoadedLLM, tag: str) -> Engine:
        reference = TorchEngine(llm_.model, llm_.tokenizer, bf16=bf16 and device == "cpu")
        if runs_on == TORCH_BF16:
            return bf16_engine(reference)
        if runs_on != CT2:
            return reference
        t1 = time.perf_counter()
        path, _ = ensure_ct2(llm_.model, llm_.tokenizer, conversions / tag, engine_key(model, tag))
        timings[f"convert {tag}"] = time.perf_counter() - t1
        return CT2Engine(path, llm_.tokenizer, fallback=reference)

    t0 = time.perf_counter()
    base = fresh()
    df = training_prompts(prompted, lists, PromptFactory(val_memory), items, catalog, base.tokenizer, cfg, seed=seed)
    prompts = [Prompt(t, r, int(n), 0, int(d)) for t, r, n, d in
               zip(df["text"], df["response"], df["n_tokens"], df["n_dropped"], strict=True)]
    ppl = response_perplexity(base.model, base.tokenizer, prompts, batch_size=1 if device == "cpu" else infer_batch,
                              progress=True)  # on a CPU padding costs more than batching saves
    timings["prompts + perplexity"] = time.perf_counter() - t0
    typer.echo(f"{len(prompts)} training prompts ({(df['kind'] == 'candidates').sum()} candidate prompts over the "
               f"ranker's out-of-fold top 20) from {len(prompted)} validation targets; the second pass fits on "
               f"{len(rank_train)} other validation lists")

    def letters(eng: Engine, base_scorer: VariantScorer | None = None) -> LLMCandidateScorer:
        return LLMCandidateScorer(base_scorer, eng, factory, items, catalog, cfg, batch_size=infer_batch, seed=seed)

    def candidates(eng: Engine):  # noqa: ANN202 - an LLMCandidateScorer per fit, or their PeriodScorer
        return by_fit(lay, lambda fit: letters(eng, mixups[fit]))

    zero_engine = as_engine(base, "base")
    zero = candidates(zero_engine)
    run("llm-candidates zero-shot", zero, lambda z=zero: candidate_summary(parts(z)))
    del zero, zero_engine, base

    def fit_second(eng: Engine) -> tuple[LearnedRanker, float]:
        """The second pass on the rank-train lists, scored by this engine (the validation fit's memory)."""
        t1 = time.perf_counter()
        scorer = LLMCandidateScorer(None, eng, PromptFactory(val_memory), items, catalog, cfg,
                                    batch_size=infer_batch, seed=seed)
        second, _ = fit_second_pass(scorer, val, rank_train, seed, infer_batch)
        return second, time.perf_counter() - t1

    shares = [float(x) for x in curve.split(",")]
    curve_on = test if curve_targets < 0 or len(shares) == 1 else test.head(curve_targets)
    curve_ranker = ranker_m
    if len(curve_on) < len(test):
        curve_ranker = run(f"ranker (the curve's {len(curve_on)})",
                           by_fit(lay, lambda fit: ranker_scorer(fit, catalog, first, memory=memory)), on=curve_on)
    tuned_name, trainable = model, 0
    for share in shares:
        n = max(1, int(round(share * len(prompts))))
        llm_ = add_lora(fresh())
        tuned_name, trainable = llm_.name, llm_.info.get("trainable_parameters", 0)
        order = schedule(ppl[:n], LLMTrainConfig(seed=seed))
        t1 = time.perf_counter()
        res = fine_tune(llm_.model, llm_.tokenizer, prompts[:n], LLMTrainConfig(
            lr=lr, batch_size=batch_size, max_seconds=train_seconds * share, seed=seed,
            mixed_bf16=device == "cpu" and not qlora and native_bf16()), order)
        timings[f"fine-tune {share:.0%}"] = time.perf_counter() - t1
        eng = as_engine(llm_, f"tuned-{share:g}")
        second, secs = fit_second(eng)
        timings[f"second pass {share:.0%}"] = secs
        final = share == shares[-1]
        name = "ranker-llm" if final else f"ranker-llm ({share:.0%} of the budget)"
        both = by_fit(lay, lambda fit, e=eng, s2=second: RankerLLMScorer(
            ranker_scorer(fit, catalog, first, memory=memory), letters(e), s2, LIMITS.candidates))
        m = run(name, both, lambda b=both, s2=second: {**candidate_summary(parts(b)), "importance": s2.importances()},
                on=test if final else curve_on)
        versus = ranker_m if final else curve_ranker
        curve_rows.append({"share": share, "prompts": n, "steps": res.steps, "examples_seen": res.examples_seen,
                           "train_seconds": round(res.seconds, 1), "loss_first": float(np.mean(res.step_losses[:5])),
                           "loss_last": float(np.mean(res.step_losses[-5:])), "second_pass_lists": len(rank_train),
                           "second_pass_held_out_ndcg@10": second.info.get("held_out_ndcg@10"),
                           "ranker_llm_ndcg@10": m["overall"]["ndcg@10"],
                           "targets": m["overall"]["n"], "ranker_ndcg@10": versus["overall"]["ndcg@10"],
                           "ratio_to_ranker": m["overall"]["ndcg@10"] / max(versus["overall"]["ndcg@10"], 1e-12)})
        save(complete=False)
        if not final:
            continue
        tuned_c = candidates(eng)
        run("llm-candidates", tuned_c, lambda t=tuned_c: candidate_summary(parts(t)))
        encoder = load_title_model(lay.title_model)
        gen_on = test if generate_targets < 0 else test.head(generate_targets)

        def generator(fit: Layout, constrained: bool, e: Engine = eng, encoder: object = encoder,
                      base: object = None, prompt_cfg: PromptConfig = cfg, factory: PromptFactory = factory
                      ) -> LLMGenerateScorer:
            ckpt = load_checkpoint(fit.model(ID_MODEL))
            return LLMGenerateScorer(mixups[fit].base if base is None else base, e, factory, items, encoder,
                                     trained_id_vectors(ckpt.model, ckpt.vocab), prompt_cfg,
                                     GenerateConfig(batch_size=infer_batch, seed=seed), constrained=constrained)

        def generate(name: str, scorer: object, on: pd.DataFrame = gen_on) -> None:
            run(name, scorer, lambda g=scorer: generation_summary([r for p in parts(g) for r in p.records], catalog),
                on=on)

        for constrained in (False, True):
            generate("llm-generate-mixup" + (" (constrained)" if constrained else ""),
                     by_fit(lay, lambda fit, c=constrained: generator(fit, c)))
        run(f"mixup + variants (the generation rows' {len(gen_on)})", by_fit(lay, lambda fit: mixups[fit]), on=gen_on)
        if ablations:  # Table 3's rows on the paper's framework: the same adapter, each part switched off
            for row in LLM_GENERATION_ABLATIONS:
                prompt_cfg, mode, title_list = llm_generation_ablation(row, cfg)
                mem, text, enc, fac = memory, None, encoder, factory
                if row == PRETRAINED:
                    try:
                        enc, vectors, mem = pretrained_text(catalog, tables.search_results)
                    except ImportError as e:
                        typer.echo(f"skipping {row}: {e}")
                        continue
                    text, fac = (enc, vectors), PromptFactory(mem)
                rcfg = RetrievalConfig(mode=mode, n=1, title_list=title_list)  # type: ignore[arg-type]
                generate(f"llm-generate-mixup {row}", by_fit(lay, lambda fit, r=rcfg, m=mem, t=text, en=enc, f=fac,
                                                             p=prompt_cfg: generator(
                    fit, False, encoder=en, base=retrieval_scorer(fit, catalog, r, m, text=t), prompt_cfg=p,
                    factory=f)))

    typer.echo(f"\n{len(test)} test targets (seed {seed}), {workdir}; base model {tuned_name} on "
               f"{runs_on if device == 'cpu' else device}; prompt {PROMPT_VERSION}; {trainable} trainable LoRA "
               f"parameters\n")
    typer.echo("| method | n | R@10 | N@10 | MRR | cold R@10 | format viol. | valid ID | exact hit | family hit | "
               "cand. recall | top letter A (unbiased) |")
    typer.echo("|" + "---|" * 12)
    for name, m, x in rows:
        a, c = m["overall"], m["cold_start"]

        def f(key: str, x: dict = x) -> str:
            return f"{x[key]:.3f}" if key in x else ""

        bias = f"{x['top_letter_A']:.2f} ({x['top_letter_A_unbiased']:.2f})" if "top_letter_A" in x else ""
        typer.echo(f"| {name} | {a['n']} | {a['recall@10']:.4f} | {a['ndcg@10']:.4f} | {a['mrr']:.4f} | "
                   f"{c['recall@10']:.4f} | {f('format_violation_rate')} | {f('valid_catalog_id_rate')} | "
                   f"{f('exact_item_hit_rate')} | {f('family_hit_rate')} | {f('candidate_recall')} | {bias} |")
    typer.echo("\nLearning curve (ranker-llm):\n\n| share | prompts | steps | seen | train s | loss first → last | "
               "2nd-pass lists | targets | ranker-llm N@10 | ranker N@10 | ratio |\n" + "|---" * 11 + "|")
    for r in curve_rows:
        typer.echo(f"| {r['share']:.0%} | {r['prompts']} | {r['steps']} | {r['examples_seen']} | "
                   f"{r['train_seconds']:.0f} | {r['loss_first']:.3f} → {r['loss_last']:.3f} | "
                   f"{r['second_pass_lists']} | {r['targets']} | {r['ranker_llm_ndcg@10']:.4f} | "
                   f"{r['ranker_ndcg@10']:.4f} | {r['ratio_to_ranker']:.3f} |")
    total = time.perf_counter() - t_start
    typer.echo("\nWall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    typer.echo(f"total {total:.0f} s; peak RSS {peak_rss_gb():.2f} GB; torch threads {torch.get_num_threads()}")
    save(complete=True)
    if json_out is not None:  # Table 3's LLM rows in the workdir's paper report (`fashionrec report`)
        for p in llm_ablations(workdir, json.loads(json_out.read_text())):
            typer.echo(f"paper report rows: {p}")

if __name__ == "__main__":
    typer.run(main)
