"""LLM-as-judge through any OpenAI-compatible chat endpoint, as in the paper (gpt-4o-mini, temperature 0,
a JSON verdict ``{rationale, judgement}``). Off unless the evaluation is given a judge."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

JUDGE_PROMPT = (
    "You are judging whether a predicted answer to a question is correct, given the gold answers.\n"
    "Question: {question}\nGold answers: {golden}\nPredicted answer: {prediction}\n"
    'Reply with JSON only: {{"rationale": "<one sentence>", "judgement": "correct" or "incorrect"}}'
)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_verdict(text: str) -> dict[str, Any]:
    """``{"rationale", "judgement": bool | None}`` from a judge reply; None when it is not a readable verdict."""
    match = _JSON_OBJECT.search(text)
    try:
        data = json.loads(match.group()) if match else {}
    except json.JSONDecodeError:
        data = {}
    judgement = str(data.get("judgement", "")).strip().lower() if isinstance(data, dict) else ""
    verdict = {"correct": True, "incorrect": False}.get(judgement)
    return {"rationale": str(data.get("rationale", "")) if isinstance(data, dict) else "", "judgement": verdict,
            "raw": text}


@dataclass
class LLMJudge:
    """Asks ``model`` at ``base_url`` for a verdict on each prediction."""

    base_url: str
    model: str = "gpt-4o-mini"
    api_key: str = "EMPTY"
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        from openai import OpenAI

        self._client = OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=3)

    def judge(self, question: str, golden_answers: list[str], prediction: str | None) -> dict[str, Any]:
        if not prediction:
            return {"rationale": "no answer was extracted", "judgement": False, "raw": ""}
        reply = self._client.chat.completions.create(
            model=self.model, temperature=0.0, max_tokens=256,
            messages=[{"role": "user", "content": JUDGE_PROMPT.format(
                question=question, golden=json.dumps(golden_answers), prediction=prediction)}])
        return parse_verdict(reply.choices[0].message.content or "")
