"""Prepare MuSiQue for training as ReSearch does: train.parquet and a 100-question dev.parquet.

Example:
    python scripts/prepare_data.py --train musique_ans_v1.0_train.jsonl \
        --dev musique_ans_v1.0_dev.jsonl --out data/musique
Without --dev it uses the MuSiQue sample shipped in the package (a quick offline check).
"""

from __future__ import annotations

import argparse

from research_env.assets import demo_dataset
from research_env.prepare import prepare_musique


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="raw MuSiQue (or FlashRAG) train JSONL; omitted: no train split")
    parser.add_argument("--dev", default=str(demo_dataset("musique")), help="raw MuSiQue (or FlashRAG) dev JSONL")
    parser.add_argument("--out", required=True, help="output directory for train.parquet / dev.parquet")
    parser.add_argument("--val-size", type=int, default=100, help="dev questions sampled for validation")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    counts = prepare_musique(args.train, args.dev, args.out, val_size=args.val_size, seed=args.seed)
    for split, n in counts.items():
        print(f"{args.out}/{split}.parquet: {n} questions")


if __name__ == "__main__":
    main()
