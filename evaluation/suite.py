"""What `fashionrec report --suite` runs beyond the asset graph: the experiments the report reads from
`<workdir>/report/ablations/` and `<workdir>/report/suite/`. Each writes one json, and a json already there is
kept (delete it to run that part again)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from evaluation.ablation import aligned, group_ablation, test_examples
from evaluation.factories import as_of_memory, ranker_scorer, retrieval_scorer
from evaluation.periods import by_fit
from evaluation.ranking import ranker_targets, training_set
from feature_repo.layout import Layout
from models.catalog import Catalog
from models.ranker.features import FEATURE_GROUPS
from models.ranker.model import LearnedRanker, RankerConfig
from models.text.train import TitleTrainConfig

RANKER_GROUPS = "ranker_feature_groups"
RETRIEVAL = "retrieval"
# Table 3's rows on the retrieval side (the paper's mixup retrieval + our variant re-rank), as the retrieval config
# that removes each part: (mode, title list).
RETRIEVAL_ROWS: dict[str, tuple[str, str]] = {
    "mixup + variants": ("mixup", "memory_first"),
    "w/o query-product memory": ("mixup", "cosine"),
    "w/o text embedding": ("id_only", "memory_first"),
    "w/o ID embedding": ("title_only", "memory_first"),
    "w/o memory & ID embedding": ("title_only", "cosine"),
}
PRETRAINED = "w/ pretrained text embedding (all-MiniLM-L6-v2)"


def _write(path: Path, body: dict) -> Path:
    """One suite part's json (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1, default=float))
    return path


def inputs_digest(workdir: Path, paths: Sequence[Path]) -> dict[str, str]:
    """{path under the workdir: content digest} of the models a suite part read: the report flags the part as stale
    when one of them has changed since (`evaluation.paper.stale_inputs`)."""
    from serving.registry import file_digest

    return {str(Path(p).relative_to(workdir)): file_digest(Path(p)) for p in paths if Path(p).exists()}


def ablation_path(workdir: Path, name: str) -> Path:
    return Path(workdir) / "report" / "ablations" / f"{name}.json"


def pretrained_text(catalog: Catalog, search_results: object) -> tuple[object, object, object]:
    """The PRETRAINED row's text side: all-MiniLM-L6-v2 (the `pretrained` extra; ImportError without it), the
    catalog's titles through it (catalog order) and the query-product memory keyed by it."""
    from models.text import MiniLMEncoder
    from models.text.memory import AsOfMemory
    from models.text.train import embed_catalog

    minilm = MiniLMEncoder()
    return minilm, embed_catalog(minilm, catalog.items), AsOfMemory.build(search_results, minilm)


def ranker_feature_groups(workdir: Path, groups: tuple[str, ...] = tuple(FEATURE_GROUPS), progress: bool = True,
                          log: Callable[[str], None] = print) -> Path:
    """Table 3's ranker rows: the learned ranker refitted without each feature group on the same validation
    examples (the saved ranker's seed and settings), scored on every test target (`evaluation.ablation`)."""
    import pandas as pd

    lay = Layout(workdir)
    saved = LearnedRanker.load(lay.ranker)
    cfg: RankerConfig = saved.cfg
    catalog = Catalog.from_items(lay.read_items())
    t0 = time.perf_counter()
    memory = as_of_memory(lay)
    training = training_set(ranker_scorer(lay.at("val"), catalog), ranker_targets(lay.val_targets(), cfg), cfg,
                            progress)
    log(f"validation examples: {len(training.ex.groups)} targets, {training.navigational} navigational copies "
        f"({time.perf_counter() - t0:.0f} s)")
    targets = lay.test_targets()
    test = test_examples(by_fit(lay, lambda fit: ranker_scorer(fit, catalog, memory=memory)), targets, catalog,
                         progress)
    log(f"test candidates and features: {len(test.order)} targets ({test.seconds:.0f} s)")
    rankings = aligned(pd.read_parquet(lay.eval / "ranker" / "rankings.parquet"), targets, test.order)
    rows = group_ablation(training, test, rankings, cfg, groups, progress)
    for name, m in rows.items():
        log(f"{name}: N@10 {m['overall']['ndcg@10']:.4f}")
    path = ablation_path(workdir, RANKER_GROUPS)
    return _write(path, {
        "title": "The learned ranker without each feature group",
        "note": (f"Each row refits the ranker (LambdaMART, {cfg.bags} boosters, seed {cfg.seed}) on the same "
                 f"{len(training.ex.groups)} validation targets less one group's features, and ranks all "
                 f"{len(test.order)} test targets over the same candidates. `ranker` is the refit on every feature: "
                 "it equals the `ranker` row of Table 2 when the saved ranker was fitted by this code."),
        "reference": "ranker",
        "rows": {k: {kk: v[kk] for kk in ("overall", "cold_start", "warm", "features", "dropped", "fit_seconds",
                                          "importance_top5")} for k, v in rows.items()},
        "inputs": inputs_digest(lay.root, [lay.ranker]), "seconds": round(time.perf_counter() - t0, 1)})


def retrieval_ablation(workdir: Path, pretrained: bool = True, progress: bool = True,
                       log: Callable[[str], None] = print) -> Path:
    """Table 3's rows on the retrieval side: mixup + variants, and the same without the query-product memory
    (cosine title list), without the text embedding (the ID list alone), without the ID embedding (the title list
    alone), without both memory and ID; and with all-MiniLM-L6-v2 (the `pretrained` extra) in place of the LSTM title
    model, for the titles, the queries and the memory's keys. Every row re-ranks its list with the workdir's variant
    ranker, through each test target's ID-model fit, on every test target."""
    import pandas as pd

    from evaluation.metrics import evaluate
    from evaluation.retrieval import VariantScorer
    from models.retrieval import RetrievalConfig
    from models.variants import VariantRanker

    lay = Layout(workdir)
    catalog = Catalog.from_items(lay.read_items())
    targets = lay.test_targets()
    variants = VariantRanker.load(lay.variant_ranker)
    t0 = time.perf_counter()
    memory = as_of_memory(lay)

    def scorer(mode: str, title_list: str, mem: object = memory, text: tuple | None = None) -> object:
        cfg = RetrievalConfig(mode=mode, n=1, title_list=title_list)  # type: ignore[arg-type]
        return by_fit(lay, lambda fit: VariantScorer(retrieval_scorer(fit, catalog, cfg, mem, text=text), catalog,
                                                     variants))

    rows: dict[str, dict] = {}
    for name, (mode, title_list) in RETRIEVAL_ROWS.items():
        t1 = time.perf_counter()
        rows[name] = evaluate(name, scorer(mode, title_list), targets, catalog, progress=progress).metrics
        rows[name]["seconds"] = round(time.perf_counter() - t1, 1)
        log(f"{name}: N@10 {rows[name]['overall']['ndcg@10']:.4f} ({rows[name]['seconds']:.0f} s)")
    encoder_note = ""
    if pretrained:
        try:
            t1 = time.perf_counter()
            minilm, vectors, mem = pretrained_text(catalog, pd.read_parquet(lay.search_results))
            rows[PRETRAINED] = evaluate(PRETRAINED, scorer("mixup", "memory_first", mem, (minilm, vectors)), targets,
                                        catalog, progress=progress).metrics
            rows[PRETRAINED]["seconds"] = round(time.perf_counter() - t1, 1)
            log(f"{PRETRAINED}: N@10 {rows[PRETRAINED]['overall']['ndcg@10']:.4f}")
        except ImportError as e:
            encoder_note = f" The pretrained row is missing: {e}"
            log(f"skipping {PRETRAINED}: {e}")
    path = ablation_path(workdir, RETRIEVAL)
    return _write(path, {
        "title": "The paper's ablations on the retrieval side (no LLM)",
        "note": ("The paper's Table 3 removes parts of its framework; these rows remove them from the retrieval the "
                 "LLM's output is mapped through (mixup: the ID list's top 1, then the title list; the title list "
                 "starts with the query-product memory's products for the last search), each list re-ranked by the "
                 "variant ranker. `w/o product attributes` changes only the LLM's prompt, so it has no row here: "
                 "the LLM path's table has it (`benchmarks/llm.py`)." + encoder_note),
        "reference": "mixup + variants",
        "rows": {k: {kk: v[kk] for kk in ("overall", "cold_start", "warm", "seconds")} for k, v in rows.items()},
        "inputs": inputs_digest(lay.root, [lay.variant_ranker, lay.at("test").title_model]),
        "seconds": round(time.perf_counter() - t0, 1)})


PAPER_CATEGORY = "Luggage & Bags"  # the paper's ablation dataset: one category as a dataset of its own
SAMPLE = Path(__file__).resolve().parents[1] / "feature_repo" / "sample"


def _same_data(a: Path, b: Path) -> bool:
    """Whether two dataset folders hold the same tables (a clone's copy of the bundled sample is the sample)."""
    import hashlib

    def digest(d: Path) -> str | None:
        files = sorted(Path(d).glob("*.parquet"))
        return hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest() if files else None

    if Path(a).resolve() == Path(b).resolve():
        return True
    first = digest(a)
    return first is not None and first == digest(b)


def datasets(workdir: Path, extra: Sequence[tuple[str, Path, str]] = ()) -> list[tuple[str, Path, str]]:
    """The datasets Table 2 adds to the workdir's own, as (name, folder, format): the `Luggage & Bags` category of
    the workdir's dataset as a dataset of its own (where it has that category), the bundled sample (unless the
    workdir ran on it), then `extra`."""
    import pandas as pd

    info_path = Layout(workdir).canonical / "dataset.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    source = Path(info["source"]) if info.get("source") else None
    out = []
    if info.get("format") == "canonical" and source is not None and (source / "items.parquet").exists() and \
            not (source / "subset.json").exists():
        cats = pd.read_parquet(source / "items.parquet", columns=["category"])["category"]
        if (cats == PAPER_CATEGORY).any() and cats.nunique() > 1:
            out.append(("bags-only", source, "category"))
    if source is None or not _same_data(source, SAMPLE):
        out.append(("sample", SAMPLE, "canonical"))
    return out + list(extra)


def run_datasets(workdir: Path, extra: Sequence[tuple[str, Path, str]] = (), log: Callable[[str], None] = print
                 ) -> list[Path]:
    """`fashionrec run --no-llm` on each of `datasets` into `<workdir>/paper/<name>` where it has no ranker row yet
    (the `Luggage & Bags` subset is cut first, into `<workdir>/paper/data/bags-only`)."""
    from feature_repo.subsets import category_subset

    done = []
    for name, data, fmt in datasets(workdir, extra):
        wd = Path(workdir) / "paper" / name
        if _has_run(wd):
            continue
        if fmt == "category":
            data, fmt = category_subset(data, Path(workdir) / "paper" / "data" / name, PAPER_CATEGORY), "canonical"
        _run(data, fmt, wd, (), log)
        done.append(wd)
    return done


LOW_RESOURCE_SHARES = (0.1, 0.25, 0.5)
FIGURE_METHODS = ("ranker", "retrieval-mixup-variants", "retrieval-title-only-variants", "sasrec-ce", "core-trm",
                  "last-search")
SEEDS = (1, 2)  # beside the workdir's own (TrainingResource.seed, 0 by default)


def _source(workdir: Path) -> tuple[Path, str]:
    """The dataset folder and format the workdir recorded."""
    info_path = Layout(workdir).canonical / "dataset.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not info.get("source") or not Path(info["source"]).exists():
        raise FileNotFoundError(f"{workdir} does not record a dataset folder that exists: run it again with --data")
    return Path(info["source"]), info.get("format", "canonical")


def _has_run(sub: Path) -> bool:
    return (sub / "eval" / "ranker" / "metrics.json").exists() and (sub / "eval" / "report.md").exists()


def _protocol_args(workdir: Path) -> list[str]:
    """The workdir's protocol settings as `fashionrec run` options, so that a rerun scores the same test targets:
    the protocol, the refit interval and the test-target sample (`splits/protocol.json`)."""
    path = Layout(workdir).splits / "protocol.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    args = ["--protocol", info.get("protocol", "temporal")]
    refits = sorted(info.get("refits", []))
    if info.get("protocol", "temporal") == "temporal":
        import pandas as pd

        days = (pd.Timestamp(refits[1]) - pd.Timestamp(refits[0])) / pd.Timedelta(days=1) if len(refits) > 1 else 0
        args += ["--refit-every-days", f"{days:g}"]
    kept = info.get("test_targets", {})
    if kept:
        args += ["--max-test-targets", str(0 if kept.get("kept") == kept.get("of") else kept["kept"])]
    return args


def _same_targets(workdir: Path, sub: Path) -> None:
    """Refuse a rerun that scored other test targets than the workdir (its rows would not be comparable)."""
    from evaluation.paper import target_keys

    def keys(w: Path) -> set:
        return set(target_keys(Layout(w).test_targets()))

    if keys(workdir) != keys(sub):
        raise RuntimeError(f"{sub} scored other test targets than {workdir}: delete it and run the suite again with "
                           "the workdir's protocol settings")


def workdir_seed(workdir: Path) -> int:
    """The training seed the workdir ran with (`TrainingResource.seed`, recorded with its title model)."""
    return _title_settings(Layout(workdir))[0].seed


def _run(data: Path, fmt: str, sub: Path, args: Sequence[str], log: Callable[[str], None]) -> None:
    """`fashionrec run --no-llm` on a dataset into `sub`, unless `sub` has its ranker row already."""
    import subprocess
    import sys

    if _has_run(sub):
        return
    cmd = [sys.executable, "-m", "orchestration.cli", "run", "--data", str(data), "--format", fmt, "--workdir",
           str(sub), "--no-llm", "--models", "core-trm,sasrec-ce", "--log-level", "WARNING", *args]
    log(" ".join(cmd[2:]))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"{sub.name}: {time.perf_counter() - t0:.0f} s")


def _rows(workdir: Path, **extra: object) -> list[dict]:
    out = []
    for m in FIGURE_METHODS:
        path = Path(workdir) / "eval" / m / "metrics.json"
        if path.exists():
            o = json.loads(path.read_text())["overall"]
            out.append({"method": m, **extra, "n": o["n"], "recall@10": o["recall@10"], "ndcg@10": o["ndcg@10"],
                        "mrr": o["mrr"]})
    return out


def low_resource(workdir: Path, shares: Sequence[float] = LOW_RESOURCE_SHARES, log: Callable[[str], None] = print
                 ) -> Path:
    """Fig. 6: the graph again with `--user-share` 10, 25 and 50% (into `<workdir>/paper/low-resource/<pct>`), the
    workdir itself at its own share; the main methods' metrics on the same test targets."""
    from feature_repo.splits import read_user_share

    rows = _rows(workdir, share=read_user_share(Layout(workdir).splits))
    for share in shares:
        sub = Path(workdir) / "paper" / "low-resource" / f"{round(share * 100)}"
        if not _has_run(sub):
            _run(*_source(workdir), sub, ["--user-share", str(share), "--seed", str(workdir_seed(workdir)),
                                          *_protocol_args(workdir)], log)
        _same_targets(workdir, sub)
        rows += _rows(sub, share=share)
    path = Path(workdir) / "report" / "suite" / "low_resource.json"
    return _write(path, {
        "note": ("The models trained on a seeded share of the users (their training events and validation "
                 "targets; `fashionrec run --user-share`), every user's test targets evaluated. The LLM's own curve "
                 "over its training budget is `benchmarks/llm.py`'s learning curve."),
        "rows": sorted(rows, key=lambda r: (r["method"], r["share"]))})


def seeds(workdir: Path, extra_seeds: Sequence[int] = SEEDS, log: Callable[[str], None] = print) -> Path:
    """The seed spread: the graph again with other training seeds (into `<workdir>/paper/seeds/<seed>`); each main
    method's N@10 per seed, its mean and its standard deviation."""
    import pandas as pd

    base = workdir_seed(workdir)
    extra_seeds = [s for s in extra_seeds if s != base]
    rows = _rows(workdir, seed=base)
    for seed in extra_seeds:
        sub = Path(workdir) / "paper" / "seeds" / str(seed)
        if not _has_run(sub):
            _run(*_source(workdir), sub, ["--seed", str(seed), *_protocol_args(workdir)], log)
        _same_targets(workdir, sub)
        rows += _rows(sub, seed=seed)
    df = pd.DataFrame(rows)
    spread = [{"method": m, "seeds": len(g), "mean N@10": float(g["ndcg@10"].mean()),
               "sd N@10": float(g["ndcg@10"].std(ddof=1)) if len(g) > 1 else float("nan"),
               "min N@10": float(g["ndcg@10"].min()), "max N@10": float(g["ndcg@10"].max())}
              for m, g in df.groupby("method", sort=True)] if len(df) else []
    path = Path(workdir) / "report" / "suite" / "seeds.json"
    return _write(path, {
        "note": (f"The whole graph (--no-llm) with training seeds {base} (the workdir) and "
                 f"{', '.join(map(str, extra_seeds))}; the test targets are the same in every run (checked). The "
                 "spread is training noise only: a gap between two methods smaller than it is not a real gap, and "
                 "one larger than it can still be test-sample noise (Table 2's intervals)."),
        "rows": spread, "per_seed": rows})


# Fig. 5's pairs, as the paper ran them: trained on footwear and tested on the three other categories, and trained
# on luggage and tested on footwear.
ZERO_SHOT = (("Footwear", "Luggage & Bags"), ("Footwear", "Clothing"), ("Footwear", "Accessories & Jewelry"),
             ("Luggage & Bags", "Footwear"))


def _title_settings(lay: Layout) -> tuple[TitleTrainConfig, float, int]:
    """The workdir's title-model settings (`title_model` asset): its training config (epochs, seed), and the share
    and seed of the users that trained it."""
    from dataclasses import replace

    saved = lay.at("val").title_model / "train_config.json"
    d = json.loads(saved.read_text()) if saved.exists() else {}
    base = TitleTrainConfig()
    cfg = replace(base, epochs=int(d.get("epochs", base.epochs)), seed=int(d.get("seed", base.seed)),
                  show_progress=False)
    info = json.loads((lay.splits / "protocol.json").read_text()) if (lay.splits / "protocol.json").exists() else {}
    users = info.get("training_users", {})
    return cfg, float(users.get("share", 1.0)), int(users.get("seed", 0))


EVERY = "every category"


def title_fit(lay: Layout, period: str, source: str | None = None) -> tuple[object, int]:
    """The period's title model as the workdir's `title_model` asset fits it (its settings and training users), on
    the purchases of `source` only (every search kept) or of every category (None); and its number of pairs."""
    from feature_repo.schema import CanonicalTables
    from feature_repo.splits import read_splits, training_events, training_user_mask
    from models.text.train import build_pairs, train_title_model

    tables = CanonicalTables.read(lay.canonical)
    cfg, share, user_seed = _title_settings(lay)
    ev = training_events(read_splits(lay.splits), tables.events, period)  # type: ignore[arg-type]
    ev = ev[training_user_mask(ev["user_id"], share, user_seed)]
    if source is not None:
        category_of = tables.items.set_index("item_id")["category"]
        ev = ev[(ev["action"] == "search") | (ev["item_id"].map(category_of) == source).to_numpy()]
    model, result = train_title_model(build_pairs(ev, tables.search_results), tables.items, cfg)
    return model, result.n_pairs


def zero_shot(workdir: Path, pairs: Sequence[tuple[str, str]] = ZERO_SHOT, log: Callable[[str], None] = print,
              progress: bool = True) -> Path:
    """Fig. 5: the text side (the LSTM title model of each fit and the variant ranker) trained on one category's
    purchases alone (every search kept: the memory and the queries are the shop's log), then title-only + variants
    on another category's test targets, beside the same pipeline trained on every category's purchases, on the same
    targets. Both sides go through this one code path (the workdir's title settings and training users, the variant
    ranker fitted on the validation targets' title-only lists), so the category is the only difference. The ID
    models, which know no item of the other category's catalog, are not applicable, as in the paper."""
    import pandas as pd

    from evaluation.metrics import evaluate
    from evaluation.retrieval import VariantScorer, variant_examples, variant_targets
    from models.retrieval import RetrievalConfig
    from models.text.memory import AsOfMemory
    from models.text.train import embed_catalog
    from models.variants import ItemAttributes, VariantConfig, fit_variant_ranker

    lay = Layout(workdir)
    catalog = Catalog.from_items(lay.read_items())
    test, val = lay.test_targets(), lay.val_targets()
    title_only = RetrievalConfig(mode="title_only")
    sources, tested = set(val["category"]), set(test["category"])
    if skipped := [p for p in pairs if p[0] not in sources or p[1] not in tested]:
        log(f"zero-shot: skipping {skipped}: no validation targets of the source or no test targets of the target")
    pairs = [p for p in pairs if p[0] in sources and p[1] in tested]
    searches = pd.read_parquet(lay.search_results)

    def text_side(source: str | None) -> tuple[Callable, int, float]:
        """The title models (val and test fits) and the variant ranker trained on `source`'s purchases (None: every
        category's); a `by_fit` scorer factory for title-only + variants, the test fit's pairs, the seconds."""
        t1 = time.perf_counter()
        text = {}
        for period in ("val", "test"):  # each fit's title model, on the purchases before its cut
            model, n_pairs = title_fit(lay, period, source)
            text[period] = (model, embed_catalog(model, catalog.items), AsOfMemory.build(searches, model), n_pairs)
        enc, vec, mem, _ = text["val"]
        base = retrieval_scorer(lay.at("val"), catalog, title_only, mem, text=(enc, vec))
        vcfg = VariantConfig()
        fit_on = val if source is None else val[val["category"] == source]
        variants = fit_variant_ranker(variant_examples(base, variant_targets(fit_on.reset_index(drop=True), vcfg),
                                                       catalog, ItemAttributes.from_items(catalog.items), vcfg), vcfg)
        enc, vec, mem, n_pairs = text["test"]

        def factory(fit: Path, e=enc, v=vec, m=mem, vr=variants) -> VariantScorer:  # noqa: ANN001
            return VariantScorer(retrieval_scorer(fit, catalog, title_only, m, text=(e, v)), catalog, vr)
        return factory, n_pairs, time.perf_counter() - t1

    def score(factory: Callable, category: str) -> dict:
        on = test[test["category"] == category].reset_index(drop=True)
        return evaluate("zero-shot", by_fit(lay, factory), on, catalog, progress=progress).metrics["overall"]

    rows, t0 = [], time.perf_counter()
    home: dict[str, dict] = {}
    if pairs:
        factory, n_pairs, secs = text_side(None)
        log(f"zero-shot: the text side trained on {EVERY} ({n_pairs} pairs, {secs:.0f} s)")
        home = {c: score(factory, c) for c in sorted({b for _, b in pairs})}
    for source in sorted({a for a, _ in pairs}):
        factory, n_pairs, secs = text_side(source)
        log(f"zero-shot: the text side trained on {source} ({n_pairs} pairs, {secs:.0f} s)")
        for _, target in [p for p in pairs if p[0] == source]:
            o, h = score(factory, target), home[target]
            rows.append({"trained on": source, "tested on": target, "n": o["n"], "zero-shot R@10": o["recall@10"],
                         "zero-shot N@10": o["ndcg@10"], "trained on all R@10": h["recall@10"],
                         "trained on all N@10": h["ndcg@10"],
                         "N@10 share": o["ndcg@10"] / h["ndcg@10"] if h["ndcg@10"] else None})
            log(f"zero-shot {source} -> {target}: N@10 {o['ndcg@10']:.4f} (trained on all: {h['ndcg@10']:.4f})")
    path = Path(workdir) / "report" / "suite" / "zero_shot.json"
    return _write(path, {
        "note": ("Title-only + variants with its title models and variant ranker trained on one category's "
                 "purchases, tested on another category's test targets; beside it, the same pipeline trained on "
                 "every category's purchases, on the same targets (both: the workdir's title settings and training "
                 "users; the variant ranker fitted on title-only lists, so this `trained on all` differs a little "
                 "from Table 2's title-only + variants row, whose variant ranker is fitted on mixup lists)."),
        "rows": rows, "seconds": round(time.perf_counter() - t0, 1)})


LLM_PATH = "llm_path"
LLM_GENERATION = "llm_generation"
# The LLM benchmark's rows on every seeded target (benchmarks/llm.py's names), in Table 3's order; the learning
# curve's rows ("ranker-llm (25% of the budget)", "ranker (the curve's 300)") only reach the note.
LLM_PATH_ROWS = ("ranker", "ranker-llm", "llm-candidates", "llm-candidates zero-shot", "mixup + variants",
                 "title-only + variants", "last-search")
GENERATION_ROWS = ("llm-generate-mixup", "mixup + variants (the generation rows'")
# Table 3's rows on the paper's framework (llm-generate-mixup): row -> (the prompt switches it turns off, the
# retrieval row of RETRIEVAL_ROWS the answer is mapped through). The pretrained row swaps the title encoder (and the
# memory's keys) for all-MiniLM-L6-v2. The switches act at inference: the adapter is the one tuned on full prompts.
LLM_GENERATION_ABLATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "w/o product attributes": (("include_attributes",), "mixup + variants"),
    "w/o query-product memory": (("include_memory",), "w/o query-product memory"),
    "w/o text embedding": ((), "w/o text embedding"),
    "w/o ID embedding": ((), "w/o ID embedding"),
    "w/o memory & ID embedding": (("include_memory",), "w/o memory & ID embedding"),
    "w/o memory & ID & attributes": (("include_memory", "include_attributes"), "w/o memory & ID embedding"),
    PRETRAINED: ((), "mixup + variants"),
}


def llm_generation_ablation(name: str, cfg: object) -> tuple[object, str, str]:
    """(the prompt config, the retrieval mode, the title list) of one LLM_GENERATION_ABLATIONS row."""
    from dataclasses import replace

    switches, retrieval = LLM_GENERATION_ABLATIONS[name]
    mode, title_list = RETRIEVAL_ROWS[retrieval]
    return replace(cfg, **dict.fromkeys(switches, False)), mode, title_list  # type: ignore[type-var]


def llm_ablations(workdir: Path, bench: dict, source: str = "benchmarks/llm.py --json") -> list[Path]:
    """Table 3's LLM rows from an LLM benchmark's results (`benchmarks/llm.py --json`): its rows on every seeded
    target against `ranker` (`ranker-llm`, candidate scoring fine-tuned and zero-shot, and the retrieval rows
    beside them), and its generation rows against mixup + variants on the generation sample. The learning curve
    goes into the note. A stopped run (`"complete": false`) says so in both titles."""
    n, by_name = int(bench["targets"]), {r["method"]: r for r in bench["rows"]}
    rows = {m: by_name[m] for m in LLM_PATH_ROWS if m in by_name}
    gen_rows = {m: r for m, r in by_name.items() if m.startswith(GENERATION_ROWS)}
    stopped = "" if bench.get("complete", True) else ", a run stopped part way"
    model = f"{bench.get('base_model', '?')} on {bench.get('engine', '?')} ({bench.get('device', 'cpu')})"
    curve = "; ".join(f"{c['share']:.0%} of the budget ({c['steps']} steps): ranker-llm {c['ranker_llm_ndcg@10']:.4f} "
                      f"against ranker {c['ranker_ndcg@10']:.4f} on {c['targets']} targets" for c in bench.get("curve", []))
    written = [_write(ablation_path(workdir, LLM_PATH), {
        "title": f"The LLM path: {n:,} seeded test targets, {model}{stopped}",
        "note": (f"From `{source}` (seed {bench.get('seed', 0)}). `ranker-llm`: the LLM scores the ranker's top 20 "
                 "and a second LambdaMART pass re-orders them; llm-candidates: the LLM picks among mixup + "
                 "variants' first 20." + (f" Learning curve: {curve}." if curve else "")),
        "reference": "ranker", "rows": rows})]
    ref = next((m for m in gen_rows if m.startswith("mixup + variants")), None)
    ablation_path(workdir, LLM_GENERATION).unlink(missing_ok=True)  # an earlier import's, if this run has none
    if gen_rows and ref:
        k = gen_rows[ref]["overall"]["n"]
        ablated = [m for m in gen_rows if m.removeprefix("llm-generate-mixup ") in LLM_GENERATION_ABLATIONS]
        written.append(_write(ablation_path(workdir, LLM_GENERATION), {
            "title": (f"Candidate scoring against generation{', and the ablations of generation' if ablated else ''}:"
                      f" {k} seeded test targets, {model}{stopped}"),
            "note": ("The paper's framework (the LLM generates an ID and a title; mixup retrieval maps them onto the "
                     "catalog), free and constrained to catalog IDs, against the retrieval list it starts from, on "
                     "the same targets." + (
                         " The `w/o` rows are the paper's Table 3 on this path: each turns its prompt segments off "
                         "and maps the answer through the retrieval without its part (the retrieval table's rows), "
                         "with the adapter tuned on full prompts (the switches act at inference, not in training). "
                         f"`{ref}` is the list the LLM reads."
                         if ablated else "")),
            # with the ablations, each row against the full framework, as the paper's column reads
            "reference": "llm-generate-mixup" if ablated and "llm-generate-mixup" in gen_rows else ref,
            "rows": gen_rows}))
    return written


def run_suite(workdir: Path, log: Callable[[str], None] = print, progress: bool = True,
              extra: Sequence[tuple[str, Path, str]] = (), with_datasets: bool = True) -> list[Path]:
    """Every suite part whose output is missing (the datasets' runs first); the paths written."""
    written = run_datasets(workdir, extra, log) if with_datasets else []
    if not ablation_path(workdir, RANKER_GROUPS).exists():
        if not (Layout(workdir).ranker / "ranker.json").exists():
            log("skipping the ranker's feature-group ablation: the workdir has no ranker (materialize `ranker`)")
        else:
            written.append(ranker_feature_groups(workdir, progress=progress, log=log))
    suite = Path(workdir) / "report" / "suite"
    if with_datasets and not (suite / "low_resource.json").exists():
        written.append(low_resource(workdir, log=log))
    if with_datasets and not (suite / "seeds.json").exists():
        written.append(seeds(workdir, log=log))
    if not (suite / "zero_shot.json").exists():
        if not (Layout(workdir).eval / "retrieval-title-only-variants" / "metrics.json").exists():
            log("skipping the zero-shot runs: the workdir has no retrieval-title-only-variants row")
        else:
            written.append(zero_shot(workdir, log=log, progress=progress))
    if not ablation_path(workdir, RETRIEVAL).exists():
        if not Layout(workdir).variant_ranker.exists():
            log("skipping the retrieval ablations: the workdir has no text side (run without --no-retrieval)")
        else:
            written.append(retrieval_ablation(workdir, progress=progress, log=log))
    return written
