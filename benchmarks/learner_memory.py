"""Peak memory of a learner step on CPU: one float32 learner (what each DDP replica holds) vs two FSDP2
learners over gloo in bfloat16 with gradient checkpointing, each next to ``agents.training.memory``'s estimate,
and the saving factor measured vs predicted. The step and the models are ``benchmarks/gpu_learner.py``'s.

    python benchmarks/learner_memory.py        # Qwen2.5-0.5B's shape cut to 2 layers; about a minute on 2 cores
    python benchmarks/learner_memory.py --quick --json out.json   # the same: the defaults are its quick mode

Memory is each process's peak resident set less its resident set just before the model is built (Python, torch
and the process group), the larger of the two ranks for FSDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_learner import batch, build, step  # noqa: E402
from run import add_contract_arguments, write_result  # noqa: E402

from agents.training.memory import GIB, QWEN25_SHAPES, learner_memory  # noqa: E402

#: Page size, to read the current resident set from /proc/self/statm.
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def worker(rank: int, world: int, port: int, setup: dict, results: dict) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    if setup["strategy"] == "fsdp":
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    shape = dataclasses.replace(QWEN25_SHAPES[setup["shape"]], num_hidden_layers=setup["layers"])
    baseline = resident_bytes()
    policy = build(shape, setup["strategy"], setup["dtype"], setup["checkpointing"], "cpu")
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.0)
    data = batch(shape, setup["rows"], setup["length"], "cpu")
    for _ in range(2):  # the second step runs with AdamW's state allocated, as every later one does
        step(policy, optimizer, data)
    results[rank] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def measure(setup: dict) -> int:
    """Peak bytes of the busiest rank, each rank in a fresh process (peak RSS never goes down)."""
    world = 2 if setup["strategy"] == "fsdp" else 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(world, port, setup, results), nprocs=world, join=True)
        return max(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.5B", choices=list(QWEN25_SHAPES))
    parser.add_argument("--layers", type=int, default=2, help="decoder layers kept of the shape (CPU memory)")
    parser.add_argument("--length", type=int, default=256, help="tokens per row (the second half carries loss)")
    parser.add_argument("--rows", type=int, default=2, help="rows per forward/backward")
    add_contract_arguments(parser)
    # --quick changes nothing: the defaults already take about a minute of CPU, and at 128 tokens per row the
    # fixed costs hide the activations, so the saving factor fell outside +-20% (1.45x vs 1.85x predicted).
    args = parser.parse_args()
    shape = dataclasses.replace(QWEN25_SHAPES[args.shape], num_hidden_layers=args.layers)
    rows = []
    for strategy, dtype, checkpointing in (("ddp", "float32", False), ("fsdp", "bfloat16", True)):
        setup = {
            "shape": args.shape,
            "layers": args.layers,
            "strategy": strategy,
            "dtype": dtype,
            "checkpointing": checkpointing,
            "rows": args.rows,
            "length": args.length,
        }
        world = 2 if strategy == "fsdp" else 1
        estimate = learner_memory(
            shape,
            strategy=strategy,
            world_size=world,
            dtype=dtype,
            gradient_checkpointing=checkpointing,
            micro_batch_size=args.rows,
            sequence_length=args.length,
            loss_tokens=args.rows * (args.length - args.length // 2),
        )
        rows.append(
            {**setup, "world_size": world, "measured_gib": measure(setup) / GIB, "estimate_gib": estimate.total / GIB}
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nQwen2.5-{args.shape} shape with {args.layers} layers ({shape.parameters() / 1e6:.0f}M parameters), "
        f"{args.rows} x {args.length} tokens, CPU, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| learner | measured GiB per process | estimate GiB |")
    print("|---|---|---|")
    for row in rows:
        checkpointing = ", checkpointing" if row["checkpointing"] else ""
        name = f"{row['strategy']} x{row['world_size']}, {row['dtype']}{checkpointing}"
        print(f"| {name} | {row['measured_gib']:.2f} | {row['estimate_gib']:.2f} |")
    measured, predicted = (rows[0][k] / rows[1][k] for k in ("measured_gib", "estimate_gib"))
    verdict = "within" if abs(measured / predicted - 1) <= 0.2 else "OUTSIDE"
    print(f"saving factor: measured {measured:.2f}x, predicted {predicted:.2f}x ({verdict} +-20%)")
    ratios = {
        "saving factor ddp fp32 / fsdp bf16, measured": measured,
        "saving factor, measured / predicted": measured / predicted,
        **{
            f"{row['strategy']} {row['dtype']}: measured / estimate": row["measured_gib"] / row["estimate_gib"]
            for row in rows
        },
    }
    write_result(args.json, "learner_memory", ratios, rows)


if __name__ == "__main__":
    main()
