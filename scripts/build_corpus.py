"""Turn raw MuSiQue / HotpotQA / 2Wiki files into a pyserini JsonCollection of their own paragraphs.

Example (how the shipped demo corpus was made):
    python scripts/build_corpus.py --raw musique.jsonl hotpot.jsonl 2wiki.jsonl \
        --extra wiki18_sample1000.jsonl --out research_env/assets/demo_corpus.jsonl
"""

from __future__ import annotations

import argparse

from research_env.corpus import build_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", nargs="+", required=True, help="raw MuSiQue, HotpotQA or 2Wiki JSONL files")
    parser.add_argument("--extra", nargs="*", default=[], help="JsonCollection files appended as they are")
    parser.add_argument("--out", required=True, help="output JsonCollection JSONL")
    args = parser.parse_args(argv)
    n = build_corpus(args.raw, args.out, args.extra)
    print(f"wrote {n} passages to {args.out}")


if __name__ == "__main__":
    main()
