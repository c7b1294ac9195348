"""What `fashionrec report --suite` runs beyond the asset graph: the experiments the report reads from
`<workdir>/report/ablations/` and `<workdir>/report/suite/`. Each writes one json, and a json already there is
kept (delete it to run that part again)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from evaluation.ablation import aligned, group_ablation, test_examples
from evaluation.factories import as_of_memory, ranker_scorer
from evaluation.periods import by_fit
from evaluation.ranking import training_set
from feature_repo.layout import Layout
from models.catalog import Catalog
from models.ranker.features import FEATURE_GROUPS
from models.ranker.model import LearnedRanker, RankerConfig

RANKER_GROUPS = "ranker_feature_groups"


def ablation_path(workdir: Path, name: str) -> Path:
    return Path(workdir) / "report" / "ablations" / f"{name}.json"


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
    training = training_set(ranker_scorer(lay.at("val"), catalog), lay.val_targets(), cfg, progress)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "title": "The learned ranker without each feature group",
        "note": (f"Each row refits the ranker (LambdaMART, {cfg.bags} boosters, seed {cfg.seed}) on the same "
                 f"{len(training.ex.groups)} validation targets less one group's features, and ranks all "
                 f"{len(test.order)} test targets over the same candidates. `ranker` is the refit on every feature: "
                 "it equals the `ranker` row of Table 2 when the saved ranker was fitted by this code."),
        "reference": "ranker",
        "rows": {k: {kk: v[kk] for kk in ("overall", "cold_start", "warm", "features", "dropped", "fit_seconds",
                                          "importance_top5")} for k, v in rows.items()},
        "seconds": round(time.perf_counter() - t0, 1)}, indent=1, default=float))
    return path


def run_suite(workdir: Path, log: Callable[[str], None] = print, progress: bool = True) -> list[Path]:
    """Every suite part whose json is missing; the paths written."""
    written = []
    if not ablation_path(workdir, RANKER_GROUPS).exists():
        if not (Layout(workdir).ranker / "ranker.json").exists():
            log("skipping the ranker's feature-group ablation: the workdir has no ranker (materialize `ranker`)")
        else:
            written.append(ranker_feature_groups(workdir, progress=progress, log=log))
    return written
