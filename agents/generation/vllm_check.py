"""Run generation calls through :class:`~agents.generation.vllm_backend.VLLMBackend` in a process of its own,
JSON in and JSON out: how tests and benchmarks drive a vLLM engine whose processes must end with the call, with this
venv's interpreter (``scripts/setup_vllm_cpu.sh``) or another venv's that has vLLM.

    python -m agents.generation.vllm_check calls.json results.json

``calls.json``: ``{"model": DIR, "llm_kwargs": {...}, "calls": [{"contexts": [[ids]], "max_new_tokens": N,
"stop": [...], "stop_token_ids": [...] | null}, ...]}``. ``results.json``: ``{"startup_s", "calls":
[{"seconds", "chunks": [Generation as a dict]}]}``. Results go to a file because vLLM logs to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


def run_calls(spec: dict[str, Any]) -> dict[str, Any]:
    """Start one backend for ``spec["model"]`` and time each generate call of ``spec["calls"]`` in order."""
    from agents.generation.vllm_backend import VLLMBackend

    started = time.perf_counter()
    backend = VLLMBackend(spec["model"], **spec.get("llm_kwargs", {}))
    results: dict[str, Any] = {"startup_s": time.perf_counter() - started, "calls": []}
    for call in spec["calls"]:
        started = time.perf_counter()
        chunks = backend.generate(
            call["contexts"],
            max_new_tokens=call["max_new_tokens"],
            stop=call.get("stop", ()),
            stop_token_ids=call.get("stop_token_ids"),
        )
        results["calls"].append({"seconds": time.perf_counter() - started, "chunks": [asdict(c) for c in chunks]})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calls", type=Path, help="the JSON spec of the generate calls")
    parser.add_argument("results", type=Path, help="where to write the chunks and timings (JSON)")
    args = parser.parse_args()
    results = run_calls(json.loads(args.calls.read_text(encoding="utf-8")))
    args.results.write_text(json.dumps(results), encoding="utf-8")


if __name__ == "__main__":
    main()
