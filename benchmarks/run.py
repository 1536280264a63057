"""One entry point for the benchmarks: each runs in its quick mode, and one markdown table of ratios comes out.

    python benchmarks/run.py                           # the quick set; writes benchmarks/results/run.json
    python benchmarks/run.py --only large_corpus learning
    python benchmarks/run.py --skip retrieval --list

Ratios, not absolute figures, are what this prints: on a shared machine the absolute numbers move with the load,
while two things measured side by side in one run move together. Each benchmark is a script that follows one
contract (:func:`add_contract_arguments`, :func:`write_result`): ``--quick`` is its quickest meaningful mode and
``--json PATH`` receives ``{"benchmark", "load_average", "ratios", "rows"}``. Each runs as its own subprocess, so
a crash, an import error or a memory blow-up is reported as that benchmark's failure (with its stderr tail), and
makes this script exit non-zero; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "run.json"
#: How much of a failed benchmark's stderr the table shows (its last lines are where Python puts the error).
STDERR_TAIL = 800


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and how the quick run calls it: ``python benchmarks/<script> <args>``
    (``--json PATH`` is appended)."""

    name: str
    script: str
    args: tuple[str, ...] = ("--quick",)
    #: Why this one is left out of the default set (it still runs with ``--only NAME``); empty: in the quick set.
    not_quick: str = ""
    needs_gpu: bool = False

    def command(self, json_path: Path) -> list[str]:
        return [sys.executable, str(HERE / self.script), *self.args, "--json", str(json_path)]


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark("retrieval", "retrieval.py", ("--service", "--quick")),
    Benchmark("tokenized_overhead", "tokenized_overhead.py"),
    Benchmark("rollout", "rollout.py"),
    Benchmark("large_corpus", "large_corpus.py"),
    Benchmark("synthetic_world", "synthetic_world.py"),
    Benchmark("learner_memory", "learner_memory.py"),
    Benchmark("gpu_learner", "gpu_learner.py", needs_gpu=True),
    Benchmark(
        "learning",
        "learning.py",
        not_quick="not in quick set: one seed's SFT warm start alone ran 40-110 s per epoch x 20 epochs on 2 cores "
        "at load 2-4 (> 20 min); run it with --only learning",
    ),
    Benchmark(
        "learning_synthetic",
        "learning_synthetic.py",
        not_quick="not in quick set: one seed (warm start, GRPO and its ablation) took 6-15 min on 2 cores; run it "
        "with --only learning_synthetic",
    ),
)


# --- the contract each benchmark script follows ---------------------------------------------------------------


def add_contract_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--json``, with the same names and help in every benchmark, so that run.py can call any."""
    parser.add_argument("--quick", action="store_true", help="the quickest meaningful mode (what run.py runs)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write ratios and rows here as JSON (for run.py)")


def write_result(
    path: Path | None, benchmark: str, ratios: Mapping[str, float], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Write one benchmark's result for run.py; the load average is read now, at the end of the measurement."""
    if path is None:
        return
    result = {
        "benchmark": benchmark,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "ratios": {label: float(value) for label, value in ratios.items()},
        "rows": list(rows),
    }
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")


# --- the runner -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one benchmark run produced: its ratios, or why there are none."""

    benchmark: str
    status: str  # "ok", "failed" or "skipped"
    wall_s: float = 0.0
    load_average: list[float] | None = None
    ratios: dict[str, float] | None = None
    detail: str = ""

    def table_rows(self) -> list[tuple[str, ...]]:
        load = ", ".join(f"{x:.1f}" for x in self.load_average) if self.load_average else "-"
        wall = f"{self.wall_s:.0f}" if self.status != "skipped" else "-"
        if self.status == "ok" and self.ratios:
            return [(self.benchmark, label, f"{value:.3g}", load, wall) for label, value in self.ratios.items()]
        detail = " ".join(self.detail.split()).replace("|", "/")
        return [(self.benchmark, f"**{self.status}**: {detail}", "-", load, wall)]


def cuda_available() -> bool:
    """Asked in a subprocess so that this script does not import torch (seconds, and memory) to run the others."""
    probe = subprocess.run(
        [sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def run_one(benchmark: Benchmark, timeout_s: float) -> Outcome:
    """Run one benchmark script; any non-zero exit, timeout or missing/garbled JSON is a failure."""
    started = time.perf_counter()

    def failed(why: str, stderr: str) -> Outcome:
        detail = f"{why}; stderr: {stderr[-STDERR_TAIL:]}"
        return Outcome(benchmark.name, "failed", time.perf_counter() - started, list(os.getloadavg()), detail=detail)

    with tempfile.TemporaryDirectory(prefix=f"bench_{benchmark.name}_") as tmp:
        json_path = Path(tmp) / "result.json"
        try:
            proc = subprocess.run(
                benchmark.command(json_path), capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT
            )
        except subprocess.TimeoutExpired as e:
            stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
            return failed(f"timed out after {timeout_s:.0f} s", stderr)
        if proc.returncode != 0:
            return failed(f"exit {proc.returncode}", proc.stderr)
        try:
            result = json.loads(json_path.read_text())
            ratios = {str(k): float(v) for k, v in result["ratios"].items()}
            load = [float(x) for x in result["load_average"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return failed(f"exit 0 but no valid --json result ({type(e).__name__}: {e})", proc.stderr)
        if not ratios:
            return failed("its --json result has no ratios", proc.stderr)
        return Outcome(benchmark.name, "ok", time.perf_counter() - started, load, ratios)


def select(args: argparse.Namespace, registry: Sequence[Benchmark]) -> list[tuple[Benchmark, str]]:
    """Each benchmark with why it is skipped ('' when it runs): ``--only`` runs exactly the names given, even those
    out of the quick set; without it, the quick set runs and the rest are listed with their reason."""
    names = {b.name for b in registry}
    unknown = sorted((set(args.only or []) | set(args.skip or [])) - names)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    chosen = []
    for benchmark in registry:
        if args.only and benchmark.name not in args.only:
            continue
        if benchmark.name in (args.skip or []):
            reason = "left out with --skip"
        elif benchmark.not_quick and not args.only:
            reason = benchmark.not_quick
        else:
            reason = ""
        chosen.append((benchmark, reason))
    return chosen


def markdown(outcomes: Sequence[Outcome]) -> str:
    header = ("benchmark", "ratio", "value", "load average (1, 5, 15 min)", "wall s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for outcome in outcomes for row in outcome.table_rows()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run exactly these (also those not in the quick set)")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="leave these out (listed as skipped)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their commands, run nothing")
    parser.add_argument(
        "--add",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "COMMAND"),
        help="also run COMMAND ('SCRIPT [ARGS]', following the contract; --json PATH is appended) as benchmark NAME: "
        "one under development, or one at another size",
    )
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per benchmark; past it, it has failed")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the JSON of the whole run goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    registry = list(REGISTRY)
    for name, command in args.add:
        script, *script_args = shlex.split(command)
        registry.append(Benchmark(name, str(Path(script).resolve()), tuple(script_args)))
    chosen = select(args, registry)
    if args.list:
        for benchmark, reason in chosen:
            script = benchmark.script if "/" in benchmark.script else f"benchmarks/{benchmark.script}"
            command = " ".join(["python", script, *benchmark.args, "--json", "PATH"])
            gpu = " (needs a GPU)" if benchmark.needs_gpu else ""
            print(f"{benchmark.name}: {command}{gpu}{'  # ' + reason if reason else ''}")
        return 0
    gpu = None
    load_before = os.getloadavg()
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for benchmark, reason in chosen:
        if not reason and benchmark.needs_gpu:
            gpu = cuda_available() if gpu is None else gpu
            reason = "" if gpu else "needs a GPU (torch.cuda.is_available() is False here)"
        if reason:
            outcomes.append(Outcome(benchmark.name, "skipped", detail=reason))
            continue
        print(f"running {benchmark.name} ...", file=sys.stderr, flush=True)
        outcomes.append(run_one(benchmark, args.timeout_s))
        print(f"  {outcomes[-1].status} in {outcomes[-1].wall_s:.0f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(markdown(outcomes))
    print(
        f"\nLoad average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after; {os.cpu_count()} CPUs; "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "load_average_before": list(load_before),
                "load_average_after": list(load_after),
                "benchmarks": [vars(outcome) for outcome in outcomes],
            },
            indent=1,
        )
        + "\n"
    )
    failed = [o.benchmark for o in outcomes if o.status == "failed"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
