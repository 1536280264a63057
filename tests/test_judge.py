"""The LLM judge: what parse_verdict reads out of a reply (and what it refuses), and LLMJudge over real HTTP
against a tiny OpenAI-compatible chat server on 127.0.0.1 that judges by exact match."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agents.evaluation.judge import LLMJudge, parse_verdict


@pytest.mark.parametrize(
    ("reply", "judgement", "rationale"),
    [
        ('{"rationale": "Same person.", "judgement": "correct"}', True, "Same person."),
        ('{"rationale": "Wrong city.", "judgement": "incorrect"}', False, "Wrong city."),
        ('{"judgement": " Incorrect\\n", "rationale": "r"}', False, "r"),
        ('```json\n{"rationale": "r", "judgement": "CORRECT"}\n```', True, "r"),
        ('Here is my verdict: {"rationale": "r", "judgement": "correct"} (set {x} aside)', True, "r"),
        ('{not json} then {"rationale": "r", "judgement": "incorrect"}', False, "r"),
        ('{"rationale": "has {braces} and \\"quotes\\"", "judgement": "correct"}', True, 'has {braces} and "quotes"'),
        ('{"judgement": "correct", "rationale": null}', True, ""),
        ('{"judgement": "correct"}', True, ""),
    ],
)
def test_a_verdict_is_read_wherever_it_sits_in_the_reply(reply, judgement, rationale):
    assert parse_verdict(reply) == {"rationale": rationale, "judgement": judgement, "raw": reply}


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "correct",
        "The answer is correct.",
        "[1, 2]",
        '{"rationale": "no verdict key"}',
        '{"rationale": "r", "judgement": "partially correct"}',
        '{"rationale": "r", "judgement": true}',
        '{"rationale": "r", "judgement": "correct"',
        "{'rationale': 'r', 'judgement': 'correct'}",
    ],
)
def test_anything_else_is_no_verdict_and_keeps_the_raw_reply(reply):
    verdict = parse_verdict(reply)
    assert verdict["judgement"] is None and verdict["raw"] == reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JudgeServer:
    """``/v1/chat/completions`` that reads the judge prompt back and calls a prediction correct iff it equals a
    gold answer; ``reply`` overrides the content (a judge that writes prose). Keeps every request body."""

    def __init__(self) -> None:
        from fastapi import FastAPI

        self.requests: list[dict] = []
        self.reply: str | None = None
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def chat(body: dict) -> dict:
            self.requests.append(body)
            prompt = body["messages"][-1]["content"]
            golden = json.loads(re.search(r"^Gold answers: (.*)$", prompt, re.MULTILINE).group(1))
            prediction = re.search(r"^Predicted answer: (.*)$", prompt, re.MULTILINE).group(1)
            verdict = "correct" if prediction in golden else "incorrect"
            content = self.reply or json.dumps({"rationale": f"{prediction!r} vs {golden}", "judgement": verdict})
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        self.app = app


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[JudgeServer, str]]:
    import uvicorn

    judge = JudgeServer()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(judge.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the judge test server did not start")
        time.sleep(0.05)
    yield judge, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def judge(judge_server) -> Iterator[tuple[LLMJudge, JudgeServer]]:
    server, url = judge_server
    server.requests.clear()
    yield LLMJudge(url, model="judge-test", timeout_s=10), server
    server.reply = None


def test_judge_asks_at_temperature_0_and_returns_the_servers_verdict(judge):
    llm_judge, server = judge
    right = llm_judge.judge("Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"], "Shakespeare")
    wrong = llm_judge.judge("Who wrote Hamlet?", ["William Shakespeare"], "Marlowe")
    assert right["judgement"] is True and wrong["judgement"] is False
    assert wrong["rationale"] == "'Marlowe' vs ['William Shakespeare']"
    assert json.loads(right["raw"])["judgement"] == "correct"
    first = server.requests[0]
    assert first["model"] == "judge-test" and first["temperature"] == 0.0
    assert first["messages"][0]["role"] == "user" and "Question: Who wrote Hamlet?" in first["messages"][0]["content"]


def test_no_prediction_is_incorrect_without_asking(judge):
    llm_judge, server = judge
    assert llm_judge.judge("Who wrote Hamlet?", ["Shakespeare"], None)["judgement"] is False
    assert llm_judge.judge("Who wrote Hamlet?", ["Shakespeare"], "")["judgement"] is False
    assert server.requests == []


def test_a_reply_without_a_verdict_is_none_not_a_guess(judge):
    llm_judge, server = judge
    server.reply = "I think it is probably right."
    verdict = llm_judge.judge("Who wrote Hamlet?", ["Shakespeare"], "Shakespeare")
    assert verdict == {"rationale": "", "judgement": None, "raw": "I think it is probably right."}
