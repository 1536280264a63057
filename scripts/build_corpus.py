"""Build a pyserini JsonCollection (``{"id", "contents": "\\"Title\\"\\ntext"}`` lines) for the env's retriever.

From the paragraphs of raw MuSiQue / HotpotQA / 2Wiki files (how the shipped demo corpus was made):
    python scripts/build_corpus.py --raw musique.jsonl hotpot.jsonl 2wiki.jsonl \\
        --extra wiki18_sample1000.jsonl --out research_env/assets/demo_corpus.jsonl

From a corpus in BEIR's layout (corpus.jsonl: _id, title, text) or {"title", "text"} lines:
    python scripts/build_corpus.py --passages beir/hotpotqa/corpus.jsonl --out corpus.jsonl
"""

from __future__ import annotations

import argparse

from research_env.corpus import build_corpus, convert_corpus
from research_env.retrieval import CorpusFormatError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--raw", nargs="+", help="raw MuSiQue, HotpotQA or 2Wiki JSONL files")
    source.add_argument("--passages", nargs="+", help="BEIR corpus.jsonl (_id, title, text) or {title, text} JSONL")
    parser.add_argument("--extra", nargs="*", default=[], help="JsonCollection files appended as they are (--raw)")
    parser.add_argument("--out", required=True, help="output JsonCollection JSONL")
    args = parser.parse_args(argv)
    if args.passages:
        if args.extra:
            parser.error("--extra goes with --raw; list JsonCollection files under --passages instead")
        try:
            n = convert_corpus(args.passages, args.out)
        except (CorpusFormatError, FileNotFoundError) as error:
            parser.error(str(error))
    else:
        n = build_corpus(args.raw, args.out, args.extra)
    print(f"wrote {n} passages to {args.out}")


if __name__ == "__main__":
    main()
