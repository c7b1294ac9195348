"""The LLM benchmark at full size on a lent CUDA machine, in one command of at most 15 minutes.

Without CUDA it prints why and exits 0 (CI never has a GPU). With CUDA:

1. builds the medium-s0 graph without the LLM stage (`fashionrec run --models core-trm --no-llm --device cuda`)
   into `--workdir`, unless that workdir already holds the ranker's out-of-fold lists;
2. runs `benchmarks/llm.py` on the GPU: fine-tuning on every validation prompt (bf16, or `--qlora` for 4-bit NF4
   storage of the base), the second pass on every other validation list, and every row on 1,000 seeded test targets
   (generation on all of them), with the learning curve; it writes `--json`.

    python benchmarks/gpu_llm.py --data ../shared/data/synthetic/medium-s0 --workdir /tmp/gpu_work \
        [--train-seconds 240] [--json $OUT/llm_gpu.json]

The time left after the graph goes to training (`--train-seconds` at 100% of the curve, so the three curve points
train for 1.75x that), so keep the graph's workdir between runs when the machine allows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

REPO = Path(__file__).resolve().parents[1]


def main(data: Annotated[Path, typer.Option(help="The medium-s0 dataset dir")] = Path(
             "../shared/data/synthetic/medium-s0"),
         workdir: Annotated[Path, typer.Option(help="Workdir for the graph (reused when it has the ranker)")] = Path(
             "/tmp/gpu_work"),
         targets: int = 1000,
         train_seconds: Annotated[float, typer.Option(help="Training budget at 100% of the curve")] = 240.0,
         curve: str = "0.25,0.5,1",
         qlora: Annotated[bool, typer.Option(help="QLoRA: the base in 4-bit NF4 storage (else bf16)")] = False,
         json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    if not torch.cuda.is_available():
        typer.echo("no CUDA device here: the GPU benchmark is skipped (run benchmarks/llm.py for the CPU path)")
        raise typer.Exit(0)
    typer.echo(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    t0 = time.perf_counter()
    top = workdir / "models" / "ranker_val_top.parquet"
    if not top.exists():
        cmd = [sys.executable, "-m", "orchestration.cli", "run", "--data", str(data), "--workdir", str(workdir),
               "--models", "core-trm", "--no-llm", "--device", "cuda"]
        typer.echo("building the graph: " + " ".join(cmd))
        subprocess.run(cmd, check=True, cwd=REPO)
    typer.echo(f"graph ready in {time.perf_counter() - t0:.0f} s")
    cmd = [sys.executable, str(REPO / "benchmarks" / "llm.py"), "--workdir", str(workdir), "--data", str(data),
           "--targets", str(targets), "--generate-targets", "-1", "--train-prompts", "-1", "--rank-lists", "-1",
           "--train-seconds", str(train_seconds), "--curve", curve, "--engine", "torch", "--device", "cuda",
           "--batch-size", "16", "--infer-batch", "64"]
    cmd += ["--qlora"] if qlora else ["--bf16"]
    if json_out is not None:
        cmd += ["--json", str(json_out)]
    typer.echo("benchmark: " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO)
    typer.echo(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    typer.run(main)
