"""Peak memory of one GRPO learner step on Qwen2.5-shaped models (random weights, built from the config), float32
vs bfloat16 (+ gradient checkpointing) vs FSDP2 over one GPU, next to ``agents.training.memory``'s estimate.

Needs torch and transformers only (no Ray, no gymnasium), so it runs on a bare GPU machine:

    python benchmarks/gpu_learner.py                               # CUDA: 0.5B and 1.5B shapes, ~2 min on an H200
    python benchmarks/gpu_learner.py --device cpu --shapes tiny    # checks the script on CPU (peak RSS there)
    python benchmarks/gpu_learner.py --quick --json out.json       # the 0.5B shape only (what benchmarks/run.py runs)

Prints a table and, if ``$OUT`` is set, writes ``$OUT/gpu_learner.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import add_contract_arguments, write_result  # noqa: E402

from agents.training.algorithms.logprobs import masked_token_logprobs  # noqa: E402
from agents.training.algorithms.losses import LossConfig, policy_loss  # noqa: E402
from agents.training.memory import GIB, QWEN25_SHAPES, ModelShape, learner_memory  # noqa: E402

#: A two-layer shape over the real vocabulary, to check the script on CPU in seconds.
TINY = ModelShape(64, 2, 2, 1, 128, 151936, True)
#: (strategy, dtype, gradient checkpointing) per row.
SETUPS = (("ddp", "float32", False), ("ddp", "bfloat16", False), ("ddp", "bfloat16", True), ("fsdp", "bfloat16", True))


class Policy(torch.nn.Module):
    """The learner's forward pass, as ``CausalLMModule._forward_train`` runs it: masked log-probs, entropy and
    the frozen reference's log-probs, with the loss in float32."""

    def __init__(self, model: torch.nn.Module, reference: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.reference = model, reference

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from agents.training.fsdp import gathered

        logprobs, entropy = masked_token_logprobs(self.model, ids, attention, mask, with_entropy=True)
        with torch.no_grad(), gathered(self.reference) as reference:
            ref_logprobs = masked_token_logprobs(reference, ids, attention, mask)[0]
        return logprobs, entropy, ref_logprobs


def build(shape: ModelShape, strategy: str, dtype: str, checkpointing: bool, device: str) -> Policy:
    from transformers import AutoModelForCausalLM, Qwen2Config

    compute = getattr(torch, dtype)
    # FSDP keeps float32 master weights and computes in ``dtype``; DDP holds the model in ``dtype``.
    master = torch.float32 if strategy == "fsdp" else compute
    config = Qwen2Config(
        **shape.qwen2_config_kwargs(), head_dim=shape.head_dim, max_position_embeddings=32768, use_cache=False
    )
    with torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=master)
        reference = AutoModelForCausalLM.from_config(config, dtype=compute).requires_grad_(False).eval()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = Policy(model.train(), reference)
    if strategy == "fsdp":
        from agents.training.fsdp import shard_policy

        shard_policy(policy, model, reference, compute)
    return policy


def batch(shape: ModelShape, rows: int, length: int, device: str) -> dict[str, torch.Tensor]:
    """The second half of each row is the policy's response (loss tokens), the first the prompt and results."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(rows, length)
    mask[:, length // 2 :] = 1
    return {
        "ids": torch.randint(0, shape.vocab_size, (rows, length), generator=g).to(device),
        "attention": torch.ones(rows, length, dtype=torch.long, device=device),
        "mask": mask.to(device),
        "old_logprobs": (-12.0 * mask).to(device),
        "advantages": torch.tensor([1.0, -1.0] * rows)[:rows].to(device),
    }


def step(policy: Policy, optimizer: torch.optim.Optimizer, data: dict[str, torch.Tensor]) -> float:
    logprobs, entropy, ref_logprobs = policy(data["ids"], data["attention"], data["mask"])
    loss, _ = policy_loss(
        logprobs,
        data["old_logprobs"],
        data["advantages"],
        data["mask"],
        LossConfig(clip_ratio=0.2, kl_coef=0.001, entropy_coef=0.001, aggregation="token_mean"),
        ref_logprobs=ref_logprobs,
        entropy=entropy,
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(name: str, shape: ModelShape, strategy: str, dtype: str, checkpointing: bool, args) -> dict:
    """The peak of the second step (the first creates AdamW's state), weights and optimizer included."""
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    policy = build(shape, strategy, dtype, checkpointing, args.device)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.0)
    data = batch(shape, args.micro_batch, args.length, args.device)
    step(policy, optimizer, data)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loss = step(policy, optimizer, data)
    measured = peak_bytes(args.device)
    estimate = learner_memory(
        shape,
        strategy=strategy,
        world_size=1,
        dtype=dtype,
        gradient_checkpointing=checkpointing,
        micro_batch_size=args.micro_batch,
        sequence_length=args.length,
        loss_tokens=args.micro_batch * (args.length - args.length // 2),
    )
    del policy, optimizer
    return {
        "shape": name,
        "strategy": strategy,
        "dtype": dtype,
        "checkpointing": checkpointing,
        "measured_gib": measured / GIB,
        "estimate_gib": estimate.total / GIB,
        "ratio": measured / estimate.total,
        "loss": loss,
        "seconds": time.perf_counter() - started,
    }


def init_single_process_group(device: str) -> bool:
    """A world of one for FSDP2 (nccl on CUDA, gloo on CPU); False if it cannot be made here."""
    if not torch.distributed.is_available():
        return False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=0, world_size=1)
    except Exception as error:  # noqa: BLE001  (reported, and the other rows still run)
        print(f"FSDP skipped: no process group ({error})")
        return False
    return True


def ratios(rows: list[dict]) -> dict[str, float]:
    """Each setup's measured / estimated memory (how far the planner can be trusted), and per shape the saving of
    bfloat16 + checkpointing over float32 as measured (what the planner's advice buys)."""
    measured = [row for row in rows if "error" not in row]
    out = {}
    for row in measured:
        checkpointing = " + checkpointing" if row["checkpointing"] else ""
        out[f"{row['shape']} {row['strategy']} {row['dtype']}{checkpointing}: measured / estimate"] = row["ratio"]
    for shape in dict.fromkeys(row["shape"] for row in measured):
        cells = {
            (r["strategy"], r["dtype"], r["checkpointing"]): r["measured_gib"] for r in measured if r["shape"] == shape
        }
        if ("ddp", "float32", False) in cells and ("ddp", "bfloat16", True) in cells:
            out[f"{shape} float32 / bfloat16 + checkpointing, measured"] = (
                cells["ddp", "float32", False] / cells["ddp", "bfloat16", True]
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda or cpu (cpu measures the process's peak RSS)")
    parser.add_argument(
        "--shapes", help=f"comma-separated: tiny or {', '.join(QWEN25_SHAPES)} (default 0.5B,1.5B; --quick: 0.5B)"
    )
    parser.add_argument("--length", type=int, default=2048, help="tokens per row (the second half carries loss)")
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per forward/backward")
    add_contract_arguments(parser)
    args = parser.parse_args()
    args.shapes = args.shapes or ("0.5B" if args.quick else "0.5B,1.5B")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu")
    if args.device.startswith("cuda"):
        torch.cuda.set_device(0)
    fsdp = init_single_process_group(args.device)
    rows = []
    for name in args.shapes.split(","):
        shape = TINY if name == "tiny" else QWEN25_SHAPES[name]
        for strategy, dtype, checkpointing in SETUPS:
            if strategy == "fsdp" and not fsdp:
                continue
            try:
                rows.append(measure(name, shape, strategy, dtype, checkpointing, args))
            except torch.OutOfMemoryError as error:
                rows.append(
                    {
                        "shape": name,
                        "strategy": strategy,
                        "dtype": dtype,
                        "checkpointing": checkpointing,
                        "error": f"out of memory: {error}"[:200],
                    }
                )
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu (peak RSS of the process)"
    print(
        f"\n{device}; torch {torch.__version__}; rows x tokens = {args.micro_batch} x {args.length}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| shape | strategy | dtype | checkpointing | measured GiB | estimate GiB | measured/estimate |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['shape']} | {row['strategy']} | {row['dtype']} | {row['checkpointing']} | OOM | | |")
        else:
            print(
                f"| {row['shape']} | {row['strategy']} | {row['dtype']} | {row['checkpointing']} | "
                f"{row['measured_gib']:.2f} | {row['estimate_gib']:.2f} | {row['ratio']:.2f} |"
            )
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_learner.json").write_text(
            json.dumps(
                {"device": device, "torch": torch.__version__, "load_average": os.getloadavg(), "rows": rows}, indent=1
            )
        )
    write_result(args.json, "gpu_learner", ratios(rows), [{**row, "device": device} for row in rows])
    if fsdp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
