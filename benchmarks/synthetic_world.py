"""How fast a synthetic world is generated and written, from 10k to 1M passages. Printed as a markdown table.

    python benchmarks/synthetic_world.py                 # ~30 s on 2 cores
    python benchmarks/synthetic_world.py --sizes 6000    # one size (num_entities; ~1.7 passages per entity)

Each row generates the world in memory (names, knowledge base, passages, 1-hop to 4-hop questions) and writes
it as JSONL into a temporary directory; 100 questions per split, so the passages dominate.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from research_env.worlds import WorldConfig, generate_world, write_world

HEADER = ("entities", "passages", "questions", "generate s", "write s", "total s", "passages/s", "corpus MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6_000, 60_000, 600_000], help="num_entities per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for size in args.sizes:
        config = WorldConfig(seed=args.seed, hops="1-4", num_questions=100, num_entities=size)
        started = time.perf_counter()
        world = generate_world(config)
        generated = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            write_world(world, config, out)
            written = time.perf_counter()
            corpus_mb = os.path.getsize(os.path.join(out, "corpus.jsonl")) / 1e6
        total = written - started
        questions = sum(map(len, world.questions.values()))
        print(
            f"| {size:,} | {len(world.passages):,} | {questions} | {generated - started:.2f} | "
            f"{written - generated:.2f} | {total:.2f} | {len(world.passages) / total:,.0f} | {corpus_mb:.1f} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
