"""The paper's experiments (section 5) as one report, regenerated from what workdirs hold.

`write_report(root, sections)` writes `root/report/index.md` and its PNGs from:

- **Table 2**, one per dataset (`Section`: a workdir the graph ran into): every evaluated method's R@10, N@10 and
  MRR, the fraction of the dataset's ceiling where it ships an oracle, a seeded bootstrap 95% interval of N@10 over
  the test targets, and the improvement over the best baseline as the paper prints it (the relative gain of each
  metric over the best baseline's, the baselines being popularity, last-search and the ID models);
- **Table 3**, the ablations the suite wrote (`report/ablations/*.json`, `evaluation.ablation`);
- **Fig. 4**, cold-start: R@10 and N@10 of cold against warm targets per method, as a PNG and its table;
- **Fig. 5 and 6** (zero-shot across categories, low resource) and the seed spread, from the suite's
  `report/suite/*.json` where it ran them; otherwise the report says what is missing and how to run it.

Nothing here trains or scores: the same workdirs give the same bytes (the bootstrap is seeded, the PNGs carry no
date or software stamp, rows are sorted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models.seqrec.registry import MODELS

BASELINES = ("popularity", "last-search", *MODELS)  # the paper's baselines: ID models (and two simple ones)
METRICS = (("recall@10", "R@10"), ("ndcg@10", "N@10"), ("mrr", "MRR"))
BOOTSTRAP = 1000  # resamples of the test targets for the N@10 interval
PNG_META = {"Software": None}  # no version stamp: the same numbers give the same bytes


@dataclass
class Section:
    """One dataset's evaluation: a workdir the graph ran into."""

    name: str
    workdir: Path
    oracle: dict | None = None  # the dataset's ceiling (`evaluation.metrics.targets_ceiling`)
    note: str = ""  # protocol and resolution, one line
    results: list[dict] = field(default_factory=list)
    covered: pd.DataFrame | None = None  # (user_id, target_item_id, target_ts) of the test targets the oracle covers,
    # where it covers only some: the ceiling fraction is then taken over these targets alone

    def __post_init__(self) -> None:
        if not self.results:
            self.results = [json.loads(p.read_text()) for p in sorted((self.workdir / "eval").glob("*/metrics.json"))]

    def ranks(self, method: str) -> pd.DataFrame | None:
        """The method's per-target rankings (target_rank, cold_start, user and item), or None."""
        path = self.workdir / "eval" / method / "rankings.parquet"
        if not path.exists():
            return None
        return pd.read_parquet(path, columns=["user_id", "target_item_id", "target_ts", "target_rank", "cold_start"])


def kind(method: str) -> str:
    """baseline | text (the paper's retrieval side) | LLM | ranker (ours)."""
    if method in BASELINES:
        return "baseline"
    if method.startswith("llm-") or method == "ranker-llm" or method.startswith("ranker-on-llm"):
        return "LLM"
    if method.startswith("ranker"):
        return "ranker"
    return "text"


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-target NDCG@k of one relevant item at 1-based `ranks`."""
    r = np.asarray(ranks, np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def bootstrap_interval(values: np.ndarray, seed: int = 0, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` over `n` seeded resamples."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rows = max(1, 2**24 // len(v))  # resamples per chunk: about 128 MB of indices, whatever the target count
    # (the generator's stream is the same drawn in chunks as at once, so the interval does not depend on `rows`)
    means = np.concatenate([v[rng.integers(0, len(v), size=(min(rows, n - i), len(v)))].mean(axis=1)
                            for i in range(0, n, rows)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def target_keys(df: pd.DataFrame) -> pd.Series:
    """(user, item, ms timestamp) of each target row as one string, to match targets across tables."""
    from evaluation.metrics import target_ms

    ts = target_ms(df["target_ts"]).astype("int64")
    return df["user_id"].astype(str) + "\x1f" + df["target_item_id"].astype(str) + "\x1f" + ts.astype(str)


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    """R@10, N@10 and MRR of one relevant item per target at 1-based `ranks`."""
    r = np.asarray(ranks, np.float64)
    return {"recall@10": float((r <= 10).mean()), "ndcg@10": float(ndcg_at(r).mean()), "mrr": float((1 / r).mean())}


SAMPLE_REFERENCES = ("llm-sample-base", "ranker-on-llm-sample")  # the LLM rows' comparison rows, on their sample


def table2(section: Section, seed: int = 0) -> pd.DataFrame:
    """One row per method of one dataset: the metrics, the ceiling fraction, the N@10 interval and the gain over
    the best baseline (per metric), sorted by kind and then N@10. The LLM rows and their comparison rows
    (`SAMPLE_REFERENCES`) are on a seeded sample of the test targets: no gain over the baselines, which are on every
    target. Where the oracle covers only some targets, the ceiling fraction is each method's metric over the covered
    targets (from its per-target ranks) against the ceiling over the same targets."""
    rows, covered = [], None
    if section.covered is not None:
        covered = set(target_keys(section.covered))
    for m in section.results:
        o = m["overall"]
        r = section.ranks(m["method"])
        lo, hi = bootstrap_interval(ndcg_at(r["target_rank"].to_numpy()), seed) if r is not None else (np.nan,) * 2
        on_covered = rank_metrics(r["target_rank"].to_numpy()[target_keys(r).isin(covered).to_numpy()]) \
            if covered is not None and r is not None and len(r) else {}
        rows.append({"method": m["method"], "kind": kind(m["method"]), "n": o["n"],
                     **{k: o[k] for k, _ in METRICS}, "ndcg_lo": lo, "ndcg_hi": hi,
                     **{f"_covered {k}": on_covered.get(k, np.nan) for k, _ in METRICS}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    full = df["n"] == df["n"].max()  # rows on every test target (the LLM rows are on a sample)
    ceiling = (section.oracle or {}).get("all", {})  # `evaluation.metrics.ceiling`: the means over these targets
    for k, short in (("recall@10", "recall10"), ("ndcg@10", "ndcg10"), ("mrr", "mrr")):
        c = ceiling.get(f"exp_{short}")
        value = df[f"_covered {k}"] if covered is not None else df[k]  # over the targets the ceiling is of
        df[f"{k}/ceiling"] = np.where(full, value / c, np.nan) if c else np.nan
    df = df.drop(columns=[f"_covered {k}" for k, _ in METRICS])
    base = df[(df["kind"] == "baseline") & full]
    for k, _ in METRICS:
        best = base[k].max() if len(base) else np.nan
        df[f"{k} gain"] = np.where(full & (df["kind"] != "baseline") & (best > 0), df[k] / best - 1, np.nan)
    order = {"baseline": 0, "text": 1, "ranker": 2, "LLM": 3}
    return (df.assign(_k=df["kind"].map(order)).sort_values(["_k", "ndcg@10", "method"], ascending=[True, False, True])
            .drop(columns="_k").reset_index(drop=True))


def _f(x: float, fmt: str = ".4f") -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def frame_markdown(df: pd.DataFrame) -> str:
    """A markdown table of a frame: floats to 4 decimals, NaN as blank."""
    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return _f(float(v))
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:+.1%}"


def table2_markdown(df: pd.DataFrame) -> str:
    head = ("| method | kind | n | R@10 | N@10 | MRR | N@10 95% CI | N@10 / ceiling | R@10 gain | N@10 gain | MRR gain |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for d in df.to_dict("records"):
        ci = f"{d['ndcg_lo']:.4f}-{d['ndcg_hi']:.4f}" if not np.isnan(d["ndcg_lo"]) else ""
        lines.append(f"| {d['method']} | {d['kind']} | {d['n']} | {_f(d['recall@10'])} | {_f(d['ndcg@10'])} | "
                     f"{_f(d['mrr'])} | {ci} | {_f(d['ndcg@10/ceiling'], '.3f')} | {_pct(d['recall@10 gain'])} | "
                     f"{_pct(d['ndcg@10 gain'])} | {_pct(d['mrr gain'])} |")
    return "\n".join(lines)


def cold_warm(section: Section) -> pd.DataFrame:
    """Fig. 4's numbers: each method's R@10 and N@10 on cold-start and on warm test targets."""
    rows = []
    for m in section.results:
        if m["overall"]["n"] != max(r["overall"]["n"] for r in section.results) or "warm" not in m:
            continue
        rows.append({"method": m["method"], "kind": kind(m["method"]), "cold n": m["cold_start"]["n"],
                     "cold R@10": m["cold_start"]["recall@10"], "cold N@10": m["cold_start"]["ndcg@10"],
                     "warm n": m["warm"]["n"], "warm R@10": m["warm"]["recall@10"],
                     "warm N@10": m["warm"]["ndcg@10"]})
    return pd.DataFrame(rows).sort_values(["cold N@10", "method"], ascending=[False, True]).reset_index(drop=True) \
        if rows else pd.DataFrame()


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, headless
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, path: Path) -> Path:
    """The figure as a PNG with no version stamp (the same numbers give the same bytes), closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata=PNG_META)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def plot_cold_warm(df: pd.DataFrame, title: str, path: Path,
                   labels: tuple[str, str] = ("cold-start targets", "warm targets")) -> Path:
    """Grouped bars per row: its "cold N@10" and "warm N@10" (N@10 on cold and on warm targets per method, or any
    two bars named by `labels`)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(df) + 1.8))
    y = np.arange(len(df))
    ax.barh(y - 0.2, df["cold N@10"], height=0.4, label=labels[0], color="#4878a8")
    ax.barh(y + 0.2, df["warm N@10"], height=0.4, label=labels[1], color="#e0a040")
    ax.set_yticks(y, df["method"])
    ax.invert_yaxis()
    ax.set_xlabel("NDCG@10")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)  # below the axes: no bar hidden
    return _save(fig, path)


def plot_spread(df: pd.DataFrame, title: str, path: Path) -> Path:
    """Per method, the range of its N@10 over the seeds around its mean (min - mean to max - mean, with ± one
    standard deviation darker), the mean written beside it: the spreads are thousandths where the means are tenths,
    so they share an axis of their own."""
    plt = _pyplot()

    df = df.sort_values("mean N@10", ascending=False).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(df) + 1.6))
    y = np.arange(len(df))
    mean = df["mean N@10"]
    ax.hlines(y, df["min N@10"] - mean, df["max N@10"] - mean, color="#4878a8", linewidth=8, alpha=0.4,
              label="range over the seeds")
    ax.hlines(y, -df["sd N@10"], df["sd N@10"], color="#203850", linewidth=3, label="± 1 sd")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(y, [f"{m} (mean {v:.4f})" for m, v in zip(df["method"], mean, strict=True)])
    ax.invert_yaxis()
    ax.set_xlabel("N@10 minus the method's mean over the seeds")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return _save(fig, path)


def plot_lines(df: pd.DataFrame, x: str, y: str, hue: str, title: str, path: Path, xlabel: str | None = None,
               log_x: bool = False) -> Path:
    """One line per `hue` value of `y` against `x` (Fig. 6's curves), the legend beside the axes (no line hidden)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, g in df.sort_values(x).groupby(hue, sort=True):
        ax.plot(g[x], g[y], marker="o", label=str(name))
    if log_x:
        ticks = sorted(df[x].unique())
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:.0%}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return _save(fig, path)


# The paper's Table 3 (Luggage & Bags, Falcon-7B): each variant's N@10 as a share of its full framework's (.2037).
PAPER_TABLE3 = {"w/o product attributes": .1396, "w/o query-product memory": .1786, "w/o text embedding": .1569,
                "w/o ID embedding": .1480, "w/ pretrained text embedding": .1245,  # the paper's is CLIP
                "w/o memory & ID embedding": .1424, "w/o memory & ID & attributes": .1285}
PAPER_FULL_NDCG = .2037


def paper_share(variant: str) -> float | None:
    """The paper's N@10 of the variant this row names (on the retrieval side, or on the LLM path: "llm-generate-mixup
    w/o ..."), over its full framework's; None where the paper has none."""
    variant = variant.removeprefix("llm-generate-mixup ")
    for name, v in PAPER_TABLE3.items():
        if variant.startswith(name):
            return v / PAPER_FULL_NDCG
    return None


# What a row removes beyond its name, said under the table where the row appears.
ROW_NOTES = {"w/o text embedding": "`w/o text embedding` ranks the ID list alone: the memory's products reach the "
                                   "list through the title list, so this row drops the memory as well.",
             "w/o ID embedding": "`w/o ID embedding` is Table 2's `retrieval-title-only-variants`."}


def ablation_markdown(ablations: dict[str, dict], reference: str = "ranker") -> str:
    """Table 3: each variant's metrics, its N@10 against the reference row's, and the paper's where it has one
    (its variant's N@10 over its full framework's)."""
    ref = ablations.get(reference, {}).get("overall", {}).get("ndcg@10")
    feats = any("features" in m for m in ablations.values())
    paper = any(paper_share(n) is not None for n in ablations)
    head = ["variant", *(["features"] if feats else []), "R@10", "N@10", "MRR", "cold R@10", f"N@10 vs {reference}",
            *(["paper: N@10 vs its full framework"] if paper else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in ablations.items():
        o, c = m["overall"], m["cold_start"]
        share = paper_share(name)
        cells = [name, *([str(m.get("features", ""))] if feats else []), f"{o['recall@10']:.4f}", f"{o['ndcg@10']:.4f}",
                 f"{o['mrr']:.4f}", f"{c['recall@10']:.4f}", f"{o['ndcg@10'] / ref:.3f}x" if ref else "",
                 *([f"{share:.3f}x" if share is not None else ""] if paper else [])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [v for k, v in ROW_NOTES.items() if k in ablations]
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")


# Table 3's rows for our own parts, read off Table 2's rows of the workdir's dataset: the variant (the row that has
# every part up to it) -> the Table 2 method.
OWN_PARTS = {
    "ranker (every part)": "ranker",
    "w/o the learned ranker (mixup + variants)": "retrieval-mixup-variants",
    "w/o the learned ranker and variant selection (mixup, the paper's retrieval)": "retrieval-mixup",
}


def own_parts(section: Section) -> dict[str, dict]:
    """OWN_PARTS' rows from the section's evaluations (those it has), in OWN_PARTS' order."""
    by_method = {r["method"]: r for r in section.results}
    return {name: by_method[m] for name, m in OWN_PARTS.items() if m in by_method}


def stale_inputs(root: Path, body: dict) -> list[str]:
    """The models a suite part recorded (`inputs`: path -> digest) that have changed or gone since it ran."""
    from serving.registry import file_digest

    return sorted(p for p, d in body.get("inputs", {}).items()
                  if not (Path(root) / p).exists() or file_digest(Path(root) / p) != d)


def write_report(root: Path, sections: Sequence[Section], seed: int = 0) -> Path:
    """`root/report/index.md` and its PNGs from the sections and the suite's outputs under `root/report/`."""
    out = Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# The paper's experiments\n\nRegenerated from the workdirs below by `fashionrec report` (nothing is "
             "trained or scored to write it). Table 2's gains are relative to the best baseline (popularity, "
             "last-search, the ID models) on the same test targets; N@10 95% CI: a seeded bootstrap over the test "
             f"targets ({BOOTSTRAP} resamples). Ties count against the target."]
    for s in sections:
        df = table2(s, seed)
        parts.append(f"## Table 2: {s.name}\n\n`{s.workdir}`. {s.note}\n\n" + (table2_markdown(df) if len(df) else
                                                                               "No evaluated method."))
        if len(df) and (df["kind"] == "LLM").any():
            n = int(df.loc[df["kind"] == "LLM", "n"].max())
            base, ranker = SAMPLE_REFERENCES
            parts.append(f"The LLM rows are on a seeded sample of {n:,} test targets: read them against `{base}` "
                         f"(the retrieval list the LLM reads, on the same targets) and `{ranker}` (the ranker on the "
                         "same targets), not against the rows on every target. `benchmarks/llm.py` is their measure "
                         "of record.")
    ablation_dir = out / "ablations"
    abl = sorted(ablation_dir.glob("*.json")) if ablation_dir.exists() else []
    parts.append("## Table 3: ablations")
    own = own_parts(sections[0]) if sections else {}
    if len(own) > 1:
        parts.append(f"### Our own parts: {sections[0].name}\n\nTable 2's rows, each without one more of the parts we "
                     "added to the paper's framework: the learned ranker, then the variant selection (the re-rank "
                     "that picks each family's size and colour for the shopper).\n\n"
                     + ablation_markdown(own, reference=next(iter(own))))
    if abl:
        for p in abl:
            body = json.loads(p.read_text())
            stale = stale_inputs(root, body)
            warn = (f"**Stale:** {', '.join(f'`{x}`' for x in stale)} changed after these rows were computed; delete "
                    f"`report/ablations/{p.name}` and run `fashionrec report --suite` again.\n\n") if stale else ""
            parts.append(f"### {body.get('title', p.stem)}\n\n{warn}{body.get('note', '')}\n\n"
                         + ablation_markdown(body["rows"], body.get("reference", "ranker")))
    else:
        parts.append("Not run yet: `fashionrec report --workdir W --suite` runs them.")
    parts.append("## Fig. 4: cold-start")
    for s in sections:
        cw = cold_warm(s)
        if cw.empty:
            continue
        slug = "".join(c if c.isalnum() else "-" for c in s.name.lower()).strip("-")
        png = plot_cold_warm(cw, f"Cold-start vs warm targets: {s.name}", out / f"fig4-cold-start-{slug}.png")
        table = frame_markdown(cw)
        parts.append(f"### {s.name}\n\n![Fig. 4, {s.name}]({png.name})\n\n{table}")
    suite = out / "suite"
    for fig, stem, what in (("Fig. 5: zero-shot across categories", "zero_shot", "train on one category, test on "
                             "another"), ("Fig. 6: low resource", "low_resource", "a share of the training users"),
                            ("Seed spread", "seeds", "the main rows over 3 seeds")):
        path = suite / f"{stem}.json"
        parts.append(f"## {fig}")
        if not path.exists():
            parts.append(f"Not run yet ({what}): `fashionrec report --workdir W --suite` runs it.")
            continue
        body = json.loads(path.read_text())
        df = pd.DataFrame(body["rows"])
        if stem == "low_resource" and len(df):
            plot_lines(df, "share", "ndcg@10", "method", "Low resource: N@10 by share of training users",
                       out / "fig6-low-resource.png", xlabel="share of the training users", log_x=True)
            parts.append("![Fig. 6](fig6-low-resource.png)")
        if stem == "zero_shot" and len(df):
            bars = pd.DataFrame({"method": df["trained on"] + " -> " + df["tested on"],
                                 "cold N@10": df["zero-shot N@10"], "warm N@10": df["trained on all N@10"]})
            plot_cold_warm(bars, "Zero-shot: title-only + variants, N@10", out / "fig5-zero-shot.png",
                           labels=("trained on the other category", "trained on every category"))
            parts.append("![Fig. 5](fig5-zero-shot.png)")
        if stem == "seeds" and len(df):
            plot_spread(df, f"N@10 over {int(df['seeds'].max())} training seeds", out / "fig-seed-spread.png")
            parts.append("![Seed spread](fig-seed-spread.png)")
        parts.append(body.get("note", "") + "\n\n" + frame_markdown(df))
    text = "\n\n".join(parts) + "\n"
    for old in out.glob("fig*.png"):  # a figure this report no longer shows (a section since removed)
        if f"]({old.name})" not in text:
            old.unlink()
    path = out / "index.md"
    path.write_text(text)
    return path
