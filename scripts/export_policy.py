"""Export a trained policy as a Hugging Face checkpoint (weights and tokenizer; LoRA adapters merged).

    python scripts/export_policy.py runs/grpo_rllib --output runs/grpo_rllib/hf
    python scripts/export_policy.py runs/grpo_rllib/checkpoints/iter_000010 --output hf_iter10

RUN_DIR is the --output of scripts/train_grpo_rllib.py (its newest checkpoint is exported) or one of its
checkpoints/iter_* directories. The result loads with AutoModelForCausalLM, vLLM, and scripts/evaluate.py --model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a training run directory or an RLlib checkpoint (checkpoints/iter_*)")
    parser.add_argument("--output", required=True, help="directory of the Hugging Face checkpoint to write")
    args = parser.parse_args(argv)

    from agents.policies.export import NotACheckpointError, export_policy, find_module_checkpoint

    try:
        module = find_module_checkpoint(args.run)
    except NotACheckpointError as error:
        parser.error(str(error))
    if Path(args.output).resolve() == Path(args.run).resolve():
        parser.error("--output must differ from the run directory")
    print(f"exporting {module} ...", file=sys.stderr, flush=True)
    print(export_policy(module, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
