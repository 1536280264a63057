"""LLM-as-judge through any OpenAI-compatible chat endpoint, as in the paper (gpt-4o-mini, temperature 0,
a JSON verdict ``{rationale, judgement}``). Off unless the evaluation is given a judge."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JUDGE_PROMPT = (
    "You are judging whether a predicted answer to a question is correct, given the gold answers.\n"
    "Question: {question}\nGold answers: {golden}\nPredicted answer: {prediction}\n"
    'Reply with JSON only: {{"rationale": "<one sentence>", "judgement": "correct" or "incorrect"}}'
)
_VERDICTS = {"correct": True, "incorrect": False}


def parse_verdict(text: str) -> dict[str, Any]:
    """``{"rationale", "judgement": bool | None, "raw"}`` from a judge reply; None when it holds no readable verdict.

    The verdict is the first JSON object in the text that has a ``judgement`` key, so prose, code fences or
    stray braces around it (models add them at temperature 0 too) do not lose it.
    """
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            data, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "judgement" in data:
            rationale = data.get("rationale")
            return {
                "rationale": "" if rationale is None else str(rationale),
                "judgement": _VERDICTS.get(str(data["judgement"]).strip().lower()),
                "raw": text,
            }
    return {"rationale": "", "judgement": None, "raw": text}


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
            model=self.model,
            temperature=0.0,
            max_tokens=256,
            messages=[
                {
                    "role": "user",
                    "content": JUDGE_PROMPT.format(
                        question=question, golden=json.dumps(golden_answers), prediction=prediction
                    ),
                }
            ],
        )
        return parse_verdict(reply.choices[0].message.content or "")
