"""Write a synthetic multi-hop world: DIR/train.jsonl, DIR/dev.jsonl, DIR/test.jsonl (raw MuSiQue JSONL with
gold decompositions; the splits' entities are disjoint), DIR/corpus.jsonl (JsonCollection) and DIR/world.json.

Examples:
    python scripts/make_synthetic.py --seed 0 --out worlds/s0                             # 1-hop, ~5k passages
    python scripts/make_synthetic.py --seed 1 --hops 1-4 --num-questions 2000 --out worlds/multihop
    python scripts/make_synthetic.py --num-entities 600000 --num-questions 100 --out worlds/1m   # ~1M passages
Play it with gym.make("ReSearch-v0", dataset="DIR/test.jsonl", corpus="DIR/corpus.jsonl").
"""

from __future__ import annotations

import argparse
import time

from research_env.worlds import WorldConfig, generate_world, write_world


def main(argv: list[str] | None = None) -> None:
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the world's seed (same seed, same bytes)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--hops", default="1", help="hops per question: N or LOW-HIGH, 1 to 4 (default 1)")
    parser.add_argument("--num-questions", type=int, default=defaults.num_questions, help="questions per split")
    parser.add_argument(
        "--num-entities",
        type=int,
        default=defaults.num_entities,
        help="entities over all splits (about 1.7 passages each)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        config = WorldConfig(args.seed, args.hops, args.num_questions, args.num_entities)
        world = generate_world(config)
    except ValueError as e:
        parser.error(str(e))
    write_world(world, config, args.out)
    print(
        f"wrote {len(world.passages):,} passages and {sum(map(len, world.questions.values())):,} questions "
        f"to {args.out} in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
