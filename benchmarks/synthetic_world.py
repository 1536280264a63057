"""How fast a synthetic world is generated and written, from 10k to 1M passages. Printed as a markdown table.

    python benchmarks/synthetic_world.py                 # ~30 s on 2 cores
    python benchmarks/synthetic_world.py --sizes 6000    # one size (num_entities; ~1.7 passages per entity)
    python benchmarks/synthetic_world.py --quick         # 6k and 60k entities (what benchmarks/run.py runs)

Each row generates the world in memory (names, knowledge base, passages, 1-hop to 4-hop questions) and writes
it as JSONL into a temporary directory; 100 questions per split, so the passages dominate. The ratio reported is
passages/s at the largest size over the smallest: 1.0 means generation scales linearly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import add_contract_arguments, write_result  # noqa: E402

from research_env.worlds import WorldConfig, generate_world, write_world

#: ``--quick``: two sizes, a decade apart, so that the scaling ratio means something (~5 s on 2 cores).
QUICK_SIZES = [6_000, 60_000]
HEADER = ("entities", "passages", "questions", "generate s", "write s", "total s", "passages/s", "corpus MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="num_entities per row (default 6k, 60k, 600k)")
    parser.add_argument("--seed", type=int, default=0)
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else [6_000, 60_000, 600_000])
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for size in sizes:
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
        rows.append(
            {
                "entities": size,
                "passages": len(world.passages),
                "generate_s": generated - started,
                "write_s": written - generated,
                "passages_per_s": len(world.passages) / total,
            }
        )
        print(
            f"| {size:,} | {len(world.passages):,} | {questions} | {generated - started:.2f} | "
            f"{written - generated:.2f} | {total:.2f} | {len(world.passages) / total:,.0f} | {corpus_mb:.1f} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    scaling = {}
    if len(rows) > 1:
        label = f"passages/s at {rows[-1]['entities']:,} / at {rows[0]['entities']:,} entities"
        scaling[label] = rows[-1]["passages_per_s"] / rows[0]["passages_per_s"]
    write_result(args.json, "synthetic_world", scaling, rows)


if __name__ == "__main__":
    main()
