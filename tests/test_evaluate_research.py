"""scripts/evaluate.py with the research agent: a released checkpoint's exact prompt through --template (ReSearch's
own str.format-escaped text), generation through an OpenAI-compatible server, and caps that end a random model's
episodes quickly."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import evaluate  # noqa: E402
from test_backends import _completions_app, _free_port  # noqa: E402

from agents.evaluation.run import RandomModelWarning  # noqa: E402
from research_env.tokenizer import build_qwen25_tokenizer  # noqa: E402

# ReSearch's base-model template (github.com/Agent-RL/ReSearch @ 3b2fd14, src/verl/utils/dataset/template.py,
# Apache-2.0) as the Python string its code holds: literal braces doubled, filled by `.format(prompt=question)`.
RESEARCH_BASE_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. During "
    "thinking, the assistant can invoke the wikipedia search tool to search for fact information about specific "
    "topics if needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags respectively, and the search query and result are enclosed within <search> </search> and <result> "
    "</result> tags respectively. For example, <think> This is the reasoning process. </think> <search> search query "
    "here </search> <result> search result here </result> <think> This is the reasoning process. </think> <answer> "
    "The final answer is \\[ \\boxed{{answer here}} \\] </answer>. In the last part of the answer, the final exact "
    "answer is enclosed within \\boxed{{}} with latex format. User: {prompt}. Assistant:"
)
COMMON = ["--datasets", "musique", "--agent", "research", "--limit", "2", "--batch-size", "2", "--no-progress"]


def _rows(run_root: Path) -> list[dict]:
    [run] = [p.parent for p in run_root.glob("*/config.json")]
    return [json.loads(line) for line in (run / "traces" / "musique.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_template_file_with_doubled_braces_renders_researchs_prompt(tmp_path):
    template = tmp_path / "re_search_template.txt"
    template.write_text(RESEARCH_BASE_TEMPLATE, encoding="utf-8")
    with pytest.warns(RandomModelWarning):
        evaluate.main([*COMMON, "--template", str(template), "--output", str(tmp_path / "eval")])
    tokenizer = build_qwen25_tokenizer(base=True)
    rows = _rows(tmp_path / "eval")
    assert len(rows) == 2
    for row in rows:
        expected = RESEARCH_BASE_TEMPLATE.format(prompt=row["question"])  # what ReSearch's code renders
        assert row["prompt"] == expected and "\\boxed{answer here}" in row["prompt"] and "{{" not in row["prompt"]
        assert tokenizer.encode(row["prompt"]) == tokenizer.encode(expected)
        assert row["details"]["turns"] <= 2 and row["generated_tokens"] <= 64  # the random model's caps


def test_a_template_that_is_half_escaped_is_refused_with_the_fix(tmp_path):
    template = tmp_path / "bad.txt"
    template.write_text("Answer in \\boxed{{}} and {answer}. User: {prompt}. Assistant:", encoding="utf-8")
    from research_env.templates import TemplateFormatError, resolve_template

    with pytest.raises(TemplateFormatError, match="answer.*double the braces"):
        resolve_template(str(template), apply_chat=False)
    assert resolve_template("\\boxed{\\text{x}} {prompt}", False).text == "\\boxed{\\text{x}} {prompt}"


@pytest.fixture()
def completions_server():
    import httpx
    import uvicorn

    from agents.generation.hf_backend import HFBackend

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(_completions_app(HFBackend.from_pretrained()), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_base_url_generates_through_an_openai_compatible_server(tmp_path, completions_server):
    # One chunk each: the server's text is re-encoded, so a second turn's context may hold other (equivalent) ids.
    caps = ["--max-new-tokens", "8", "--max-turns", "1"]
    evaluate.main(
        [
            *COMMON,
            *caps,
            "--base-url",
            completions_server,
            "--api-model",
            "tiny-qwen2",
            "--output",
            str(tmp_path / "served"),
        ]
    )
    with pytest.warns(RandomModelWarning):
        evaluate.main([*COMMON, *caps, "--output", str(tmp_path / "local")])
    served, local = _rows(tmp_path / "served"), _rows(tmp_path / "local")
    assert [r["response"] for r in served] == [r["response"] for r in local]  # the same greedy model, via HTTP
    assert all(r["generated_tokens"] > 0 for r in served)
    [run] = [p.parent for p in (tmp_path / "served").glob("*/config.json")]
    assert run.name.startswith("research_tiny-qwen2_")
    assert json.loads((run / "config.json").read_text())["base_url"] == completions_server
