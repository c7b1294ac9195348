"""LLM-stage assets: training prompts, their perplexity, the LoRA adapter, and the LLM evaluation rows.

Training prompts come from the VALIDATION targets (after the training cut, before the test cut; as the variant
ranker): a generation prompt per target (response: the bought item's ID and title) and, where the bought item is
among the first 20 of its mixup + variants list, a candidate prompt with those 20 shuffled (response: its letter).
On a CPU the stage runs within `LLMResource`'s budgets on seeded samples, and every row and asset says so, and
names the base model.
"""


import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from evaluation.factories import LLM_BASE_MODE, as_of_memory, ranker_scorer, variant_scorer
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
from feature_repo.layout import Layout
from models.catalog import Catalog
from models.llm.engine import (
    CT2,
    CT2Engine,
    Engine,
    TorchEngine,
    engine_key,
    ensure_ct2,
    letter_parity,
    native_bf16,
    open_engine,
    resolve_engine,
)
from models.llm.generate import GenerateConfig, generate
from models.llm.model import add_lora, load_llm, load_tokenizer, tokenizer_corpus
from models.llm.prompt import (
    PROMPT_VERSION,
    CatalogItems,
    Prompt,
    PromptConfig,
    parse_answer,
)
from models.llm.train import (
    LLMTrainConfig,
    config_dict,
    fine_tune,
    high_perplexity,
    load_adapter,
    loss_curve_png,
    response_perplexity,
    save_adapter,
    schedule,
)
from models.ranker.model import LearnedRanker
from models.seqrec import load_checkpoint
from models.seqrec.vectors import trained_id_vectors
from models.text import load_title_model
from models.text.memory import AsOfMemory
from orchestration.assets.data import eval_targets
from orchestration.assets.ranking import ranker
from orchestration.assets.seqrec import ID_MODEL
from orchestration.assets.text import title_model
from orchestration.resources import LLMResource, WorkdirResource
from serving.llm_runtime import CORPUS_FILE
from serving.registry import file_digest


def _llm_dir(workdir: WorkdirResource) -> Path:
    d = workdir.layout.llm
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of at most n rows, in the original order."""
    if len(df) <= n:
        return df.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[keep].reset_index(drop=True)


CHECK = "check"  # train_prompts.parquet's held-out generation prompts (the format check), never trained on


def format_check_targets(n: int, train: int, check: int, seed: int) -> np.ndarray:
    """(n,) True for the sampled validation targets held out for the format check: `check` of them, seeded, taken
    only from beyond the `train` the adapter trains on (fewer, or none, where validation targets are few)."""
    k = min(check, max(n - train, 0))
    return np.isin(np.arange(n), np.random.default_rng([seed, 1]).permutation(n)[:k])


def mark_format_check(df: pd.DataFrame, held: set) -> pd.DataFrame:
    """Training prompts with the held-out moments' (user, time) generation prompts marked `CHECK` and their candidate
    prompts dropped: nothing of a held-out target is trained on."""
    at = np.array([k in held for k in moment_keys(df)], bool)
    keep = ~at | (df["kind"] == "generate").to_numpy()
    out = df[keep].reset_index(drop=True)
    out.loc[at[keep], "kind"] = CHECK
    return out


def _training(df: pd.DataFrame) -> pd.DataFrame:
    """The prompts the adapter trains on (the held-out format-check prompts left out)."""
    return df[df["kind"] != CHECK].reset_index(drop=True)


def _prompts(df: pd.DataFrame) -> list[Prompt]:
    return [Prompt(t, r, int(n), 0, int(d)) for t, r, n, d in
            zip(df["text"], df["response"], df["n_tokens"], df["n_dropped"], strict=True)]


@asset(group_name="llm", deps=[eval_targets, title_model, ranker],
       description="Training prompts from the validation targets: generation (ID + title) and candidate letters "
                   "over the learned ranker's out-of-fold top 20")
def llm_prompts(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    catalog = workdir.catalog()
    memory, items = as_of_memory(workdir.layout.at("val")), CatalogItems(catalog.items)  # the val fit's memory
    targets = pd.read_parquet(workdir.layout.eval_targets)
    # The training targets, and `format_check` more whose generation prompts are held out of training: the
    # adapter's format-violation rate is measured on them, before and after fine-tuning.
    val = _sample(targets[targets["split"] == "val"], llm.train_prompts + llm.format_check, llm.seed)
    held = format_check_targets(len(val), llm.train_prompts, llm.format_check, llm.seed)
    # The candidates: the ranker's top 20 by out-of-fold scores (the lists ranker-llm shows the LLM).
    top = pd.read_parquet(workdir.layout.ranker_val_top)
    by_key = dict(zip(zip(moment_keys(top), top["target_item_id"], strict=True), top["items"], strict=True))
    lists = [list(by_key.get((k, t), ())) for k, t in zip(moment_keys(val), val["target_item_id"].astype(str), strict=True)]
    tokenizer = load_tokenizer(llm.model, corpus=_corpus(catalog, targets))  # prompts need no weights
    df = training_prompts(val, lists, PromptFactory(memory), items, catalog, tokenizer,
                          PromptConfig(budget=llm.budget_tokens), llm.candidates, llm.seed)
    df = mark_format_check(df, set(moment_keys(val[held])))
    out = _llm_dir(workdir) / "train_prompts.parquet"
    df.to_parquet(out, index=False)
    n_check = int((df["kind"] == CHECK).sum())
    context.log.info(f"{len(df) - n_check} training prompts from {len(val) - n_check} validation targets, and "
                     f"{n_check} held-out format-check prompts ({llm.model})")
    return MaterializeResult(metadata={
        "base_model": llm.model, "prompt_version": PROMPT_VERSION, "validation_targets": len(val) - n_check,
        "format_check_prompts": n_check,
        "generate_prompts": int((df["kind"] == "generate").sum()),
        "candidate_prompts": int((df["kind"] == "candidates").sum()),
        "candidate_list_recall": float((df["kind"] == "candidates").sum() / max(len(val) - n_check, 1)),
        "mean_tokens": float(df["n_tokens"].mean()) if len(df) else 0.0,
        "truncated_share": float((df["n_dropped"] > 0).mean()) if len(df) else 0.0,
        "budget_tokens": llm.budget_tokens, "seconds": round(time.perf_counter() - t0, 2),
        "path": MetadataValue.path(str(out)),
    })


def _corpus(catalog: Catalog, targets: pd.DataFrame) -> list[str]:
    """Text for the tiny model's tokenizer (ignored by pretrained models); serving passes the same tables."""
    return tokenizer_corpus(catalog.items, targets)


@asset(group_name="llm", deps=[llm_prompts], description="Response perplexity of each training prompt (base model)")
def llm_perplexity(workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    df = _training(pd.read_parquet(_llm_dir(workdir) / "train_prompts.parquet"))
    catalog = workdir.catalog()
    base = load_llm(llm.model, corpus=_corpus(catalog, pd.read_parquet(workdir.layout.eval_targets)))
    # One prompt at a time: on a CPU, left padding to the longest of a batch costs more than batching saves
    # (8 medium-s0 prompts: 24-26 s one at a time against 40-47 s in batches of 4).
    ppl = response_perplexity(base.model, base.tokenizer, _prompts(df), batch_size=1)
    high = high_perplexity(ppl, llm.high_share)
    out = df.assign(perplexity=ppl, high=np.isin(np.arange(len(df)), high))
    out.to_parquet(_llm_dir(workdir) / "perplexity.parquet", index=False)
    return MaterializeResult(metadata={
        "base_model": base.name, "prompts": len(df), "high_perplexity_prompts": len(high),
        "high_share": llm.high_share, "median_perplexity": float(np.median(ppl)) if len(ppl) else 0.0,
        "high_threshold": float(ppl[high].min()) if len(high) else 0.0, "seconds": round(time.perf_counter() - t0, 2),
    })


@asset(group_name="llm", deps=[llm_perplexity],
       description="LoRA adapter fine-tuned with the perplexity-aware schedule (adapter only, with its metadata)")
def llm_adapter(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    df = pd.read_parquet(_llm_dir(workdir) / "perplexity.parquet")
    catalog = workdir.catalog()
    targets = pd.read_parquet(workdir.layout.eval_targets)
    corpus = _corpus(catalog, targets)
    model = add_lora(load_llm(llm.model, corpus=corpus))
    cfg = LLMTrainConfig(lr=llm.lr, epochs=1, high_share=llm.high_share, high_epochs=3, batch_size=llm.batch_size,
                         max_seconds=llm.max_train_seconds, seed=llm.seed, progress=True,
                         mixed_bf16=not torch.cuda.is_available() and native_bf16())
    prompts = _prompts(df)
    held = pd.read_parquet(_llm_dir(workdir) / "train_prompts.parquet")
    check = _prompts(held[held["kind"] == CHECK])
    before = _format_violations(model, check, llm)
    order = schedule(df["perplexity"].to_numpy(), cfg)
    res = fine_tune(model.model, model.tokenizer, prompts, cfg, order)
    after = _format_violations(model, check, llm)
    out = workdir.layout.llm_adapter
    meta = {"base_model": model.name, "base_info": model.info, "train_config": config_dict(cfg),
            "steps": res.steps, "examples_seen": res.examples_seen, "seconds": res.seconds,
            "stopped_early": res.stopped_early, "format_violation_before": before, "format_violation_after": after}
    save_adapter(model.model, out, meta)
    (out / CORPUS_FILE).write_text(json.dumps(corpus))  # serving builds the same tokenizer from it
    png = loss_curve_png(res.step_losses, _llm_dir(workdir) / "loss.png",
                         f"LoRA on {model.name}: {res.steps} steps, {res.examples_seen} prompts")
    context.log.info(f"adapter: {res.steps} steps in {res.seconds:.0f} s; format violations {before:.2f} -> {after:.2f}")
    return MaterializeResult(metadata={
        "base_model": model.name, "trainable_parameters": model.info["trainable_parameters"],
        "parameters": model.info["parameters"], "steps": res.steps, "examples_seen": res.examples_seen,
        "scheduled_examples": len(order), "stopped_early": res.stopped_early, "wall_seconds": round(res.seconds, 1),
        "loss_first": float(np.mean(res.step_losses[:5])) if res.step_losses else float("nan"),
        "loss_last": float(np.mean(res.step_losses[-5:])) if res.step_losses else float("nan"),
        "format_violation_before": before, "format_violation_after": after, "lr": llm.lr,
        "loss_curve": MetadataValue.path(str(png)), "adapter": MetadataValue.path(str(out)),
    })


def _format_violations(model, prompts: list[Prompt], llm: LLMResource) -> float:  # noqa: ANN001
    """Share of generated answers to these prompts that break the two-line format."""
    if not prompts:
        return float("nan")
    out = generate(model.model, model.tokenizer, [p.text for p in prompts], _gen_cfg(llm))
    return float(np.mean([not parse_answer(o).well_formed for o in out]))


def _gen_cfg(llm: LLMResource) -> GenerateConfig:
    return GenerateConfig(max_new_tokens=llm.max_new_tokens, batch_size=llm.infer_batch_size, seed=llm.seed)


@asset(group_name="llm", deps=[llm_adapter],
       description="The adapter merged into the base model and converted to CTranslate2 int8 (the portable fast CPU "
                   "engine; `auto` runs on it where the CPU has no native bf16), rebuilt only when the adapter "
                   "changes; the letter parity of the engine this run uses with torch fp32")
def llm_engine(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    lay = workdir.layout
    reference = _tuned(workdir, llm)
    key = engine_key(llm.model, file_digest(lay.llm_adapter))
    path, built = ensure_ct2(reference.model, reference.tokenizer, lay.llm_engine, key)
    converted = CT2Engine(path, reference.tokenizer)
    runs_on = resolve_engine(llm.engine)  # the engine llm_eval and ranker_llm will open
    used = converted if runs_on == CT2 else open_engine(runs_on, path, key, reference)[0]
    df = pd.read_parquet(_llm_dir(workdir) / "train_prompts.parquet")
    check = df[df["kind"] == "candidates"].head(llm.format_check)
    parity = letter_parity(reference, used, check["text"].tolist(), check["n_candidates"].astype(int).tolist())
    checked = (f"parity of {used.name} with {reference.name} on {parity['prompts']} candidate prompts: top letter "
               f"agreement {parity['top1_agreement']:.2f}, mean KL {parity['mean_kl']:.4f}") if parity["prompts"] \
        else "no candidate prompt to check parity on"
    context.log.info(f"{converted.name} conversion {'built' if built else 'up to date'} at {path}; engine "
                     f"{llm.engine!r} runs on {used.name} here; {checked}")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return MaterializeResult(metadata={
        "engine": converted.name, "runs_on": used.name, "base_model": llm.model,
        "adapter_digest": key["adapter_digest"], "rebuilt": built, "size_mb": round(size / 2**20, 1),
        "parity": MetadataValue.json(parity), "seconds": round(time.perf_counter() - t0, 1),
        "path": MetadataValue.path(str(path)),
    })


def _tuned(workdir: WorkdirResource, llm: LLMResource) -> TorchEngine:
    """The base model with the workdir's adapter, on the torch engine (the reference)."""
    catalog = workdir.catalog()
    base = load_llm(llm.model, corpus=_corpus(catalog, pd.read_parquet(workdir.layout.eval_targets)))
    return TorchEngine(load_adapter(base.model, workdir.layout.llm_adapter), base.tokenizer)


def _engine(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource) -> Engine:
    """The fine-tuned LLM on the configured engine (torch when the conversion is missing or stale, with a warning)."""
    engine, fell_back = open_engine(llm.engine, workdir.layout.llm_engine,
                                    engine_key(llm.model, file_digest(workdir.layout.llm_adapter)),
                                    _tuned(workdir, llm))
    if fell_back:
        context.log.warning(fell_back)
    return engine


def _candidates(engine: Engine, memory: AsOfMemory, catalog: Catalog, llm: LLMResource,
                base: VariantScorer | None = None) -> LLMCandidateScorer:
    return LLMCandidateScorer(base, engine, PromptFactory(memory), CatalogItems(catalog.items), catalog,
                              PromptConfig(budget=llm.budget_tokens), n=llm.candidates,
                              permutations=llm.permutations, seed=llm.seed, batch_size=llm.infer_batch_size)


@asset(group_name="llm", deps=[ranker, llm_prompts, llm_engine],
       description="ranker-llm's second LambdaMART pass: the LLM's letter scores over the ranker's out-of-fold top "
                   "20, on validation targets the LLM was not fine-tuned on")
def ranker_llm(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    lay = workdir.layout
    catalog = workdir.catalog()
    val = lay.val_targets()
    top = pd.read_parquet(lay.ranker_val_top)
    tuned_on = set(moment_keys(pd.read_parquet(_llm_dir(workdir) / "train_prompts.parquet")))
    fresh = top[[k not in tuned_on for k in moment_keys(top)]]
    # Lists without the bought item teach LambdaMART nothing: only those with it are scored by the LLM.
    chosen = _sample(fresh[fresh["hit"]], llm.rank_train_targets, llm.seed + 1)
    engine = _engine(context, workdir, llm)
    scorer = _candidates(engine, as_of_memory(lay.at("val")), catalog, llm)
    t1 = time.perf_counter()
    model, lp = fit_second_pass(scorer, val, chosen, llm.seed, llm.infer_batch_size)
    llm_seconds = time.perf_counter() - t1
    model.info |= {"base_model": llm.model, "engine": engine.name, "llm_seconds": round(llm_seconds, 1),
                   "validation_lists": len(chosen), "lists_available": int(fresh["hit"].sum())}
    model.save(lay.ranker_llm)
    chosen.drop(columns=["position"]).assign(llm=[x.tolist() for x in lp]).to_parquet(
        lay.ranker_llm / "val_lists.parquet", index=False)  # what the pass was fitted on, for inspection
    imp = model.importances()
    png = model.plot_importance(lay.ranker_llm / "importance.png")
    if "kept_first_pass" in model.info:
        context.log.warning(f"ranker-llm keeps the ranker's order: {model.info['kept_first_pass']}")
    elif not model.boosters:
        context.log.warning(f"ranker-llm's second pass NOT trained: {len(chosen)} validation list(s) with the bought "
                            "item; ranker-llm keeps the ranker's order")
    context.log.info(f"second pass on {len(chosen)} validation lists ({engine.name}, {llm_seconds:.0f} s of LLM)")
    return MaterializeResult(metadata={
        "base_model": llm.model, "engine": engine.name, "trained": bool(model.boosters),
        "validation_lists": len(chosen), "lists_available": int(fresh["hit"].sum()),
        "excluded_llm_training_targets": len(top) - len(fresh),
        "cross_fitted_ndcg@10": model.info.get("cross_fitted_ndcg@10", float("nan")),
        "first_pass_ndcg@10": model.info.get("first_pass_ndcg@10", float("nan")),
        "kept_first_pass": model.info.get("kept_first_pass", ""),
        "importance": MetadataValue.json({k: round(v, 1) for k, v in imp.items()}),
        "importance_png": MetadataValue.path(str(png)), "llm_seconds": round(llm_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1), "path": MetadataValue.path(str(lay.ranker_llm)),
    })


@asset(group_name="llm", deps=[ranker_llm],
       description="ranker-llm against ranker on the same seeded sample of test targets (the LLM rows' sample)")
def ranker_llm_eval(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    lay = workdir.layout
    catalog = workdir.catalog()
    sample = _sample(lay.test_targets(), llm.eval_targets, llm.seed)
    first, second = LearnedRanker.load(lay.ranker), LearnedRanker.load(lay.ranker_llm)
    memory = as_of_memory(lay)
    engine = _engine(context, workdir, llm)
    note = {"llm_base_model": llm.model, "llm_engine": engine.name, "prompt_version": PROMPT_VERSION,
            "llm_sample": f"{len(sample)} of the test targets (seed {llm.seed})"}
    both = by_fit(lay, lambda fit: RankerLLMScorer(ranker_scorer(fit, catalog, first, memory=memory),
                                                   _candidates(engine, memory, catalog, llm), second, llm.candidates))
    t1 = time.perf_counter()
    r = evaluate("ranker-llm", both, sample, catalog, batch_size=llm.infer_batch_size, progress=False, extra=note)
    r.metrics["candidates"] = candidate_summary(parts(both))
    seconds = {"ranker-llm": time.perf_counter() - t1}
    t1 = time.perf_counter()
    base = evaluate("ranker-on-llm-sample", by_fit(lay, lambda fit: ranker_scorer(fit, catalog, first, memory=memory)),
                    sample, catalog, progress=False,
                    extra={**note, "what": "the ranker on the ranker-llm row's targets (its first pass)"})
    seconds["ranker-on-llm-sample"] = time.perf_counter() - t1
    meta: dict = {"base_model": llm.model, "engine": engine.name, "targets": len(sample)}
    for res in (r, base):
        res.save(workdir.eval)
        o = res.metrics["overall"]
        meta |= {f"{res.method}/ndcg@10": o["ndcg@10"], f"{res.method}/recall@10": o["recall@10"],
                 f"{res.method}/seconds": round(seconds[res.method], 1)}
    ratio = r.metrics["overall"]["ndcg@10"] / max(base.metrics["overall"]["ndcg@10"], 1e-12)
    meta |= {"ndcg@10_ratio": round(ratio, 4), "candidates": MetadataValue.json(r.metrics["candidates"]),
             "seconds": round(time.perf_counter() - t0, 1)}
    context.log.info(f"ranker-llm / ranker N@10 on {len(sample)} test targets: {ratio:.3f}")
    return MaterializeResult(metadata=meta)


@asset(group_name="llm", deps=[llm_adapter, llm_engine],
       description="LLM rows of the report on a seeded sample of test targets: generation + mixup, candidate scoring")
def llm_eval(context: AssetExecutionContext, workdir: WorkdirResource, llm: LLMResource):
    t0 = time.perf_counter()
    catalog = workdir.catalog()
    sample = _sample(workdir.layout.test_targets(), llm.eval_targets, llm.seed)
    memory, items = as_of_memory(workdir.layout), CatalogItems(catalog.items)
    engine = _engine(context, workdir, llm)
    factory = PromptFactory(memory)
    title_model = load_title_model(workdir.layout.title_model)
    prompt_cfg = PromptConfig(budget=llm.budget_tokens)

    lists: dict[Layout, VariantScorer] = {}  # the mixup + variants lists of each ID-model fit, built once

    def ranked_of(lay: Layout) -> VariantScorer:
        if lay not in lists:
            lists[lay] = variant_scorer(lay, catalog, LLM_BASE_MODE, memory)
        return lists[lay]

    def generator(lay: Layout) -> LLMGenerateScorer:  # one per rolling refit of the ID model (or one)
        ckpt = load_checkpoint(lay.model(ID_MODEL))
        return LLMGenerateScorer(ranked_of(lay).base, engine, factory, items,
                                 title_model, trained_id_vectors(ckpt.model, ckpt.vocab), prompt_cfg, _gen_cfg(llm),
                                 constrained=llm.constrained)

    def candidates(lay: Layout) -> LLMCandidateScorer:
        return _candidates(engine, memory, catalog, llm, ranked_of(lay))

    note = {"llm_base_model": llm.model, "llm_engine": engine.name, "llm_sample": f"{len(sample)} of the test targets (seed {llm.seed})",
            "prompt_version": PROMPT_VERSION}
    results = {}
    gen = by_fit(workdir.layout, generator)
    t1 = time.perf_counter()
    r = evaluate("llm-generate-mixup", gen, sample, catalog, batch_size=llm.infer_batch_size, progress=False,
                 extra=note)
    records = [rec for g in parts(gen) for rec in g.records]
    r.metrics["generation"] = generation_summary(records, catalog)  # what the scorer saw while evaluating
    results["llm-generate-mixup"] = (r, time.perf_counter() - t1)
    cand = by_fit(workdir.layout, candidates)
    t1 = time.perf_counter()
    r = evaluate("llm-candidates", cand, sample, catalog, batch_size=llm.infer_batch_size, progress=False,
                 extra=note)
    r.metrics["candidates"] = candidate_summary(parts(cand))
    ranked = by_fit(workdir.layout, ranked_of)
    results["llm-candidates"] = (r, time.perf_counter() - t1)
    t1 = time.perf_counter()
    r = evaluate("llm-sample-base", ranked, sample, catalog, progress=False,
                 extra={**note, "what": "the mixup + variants list the LLM rows read, on the same sample"})
    results["llm-sample-base"] = (r, time.perf_counter() - t1)
    meta: dict = {"base_model": llm.model, "engine": engine.name, "targets": len(sample), "seconds": round(time.perf_counter() - t0, 1)}
    for name, (res, secs) in results.items():
        res.save(workdir.eval)
        o = res.metrics["overall"]
        meta |= {f"{name}/ndcg@10": o["ndcg@10"], f"{name}/recall@10": o["recall@10"], f"{name}/seconds": round(secs, 1)}
    meta["generation"] = MetadataValue.json(results["llm-generate-mixup"][0].metrics["generation"])
    meta["candidates"] = MetadataValue.json(results["llm-candidates"][0].metrics["candidates"])
    (_llm_dir(workdir) / "generated.json").write_text(json.dumps([r.__dict__ for r in records], indent=1))
    return MaterializeResult(metadata=meta)


LLM_ASSETS = [llm_prompts, llm_perplexity, llm_adapter, llm_engine, ranker_llm, ranker_llm_eval, llm_eval]
