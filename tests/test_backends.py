"""Generation backends on the tiny default model: exact stops, ids that decode to the text, greedy
determinism, batch independence, and the OpenAI-compatible backend against a real local server."""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest

from agents.generation.base import decode
from agents.generation.hf_backend import HFBackend

PROMPTS = ["Question: who was the father of Edward Baring? Answer:", "Hello", "The capital of France is " * 6]


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    return HFBackend.from_pretrained()


@pytest.fixture(scope="module")
def contexts(backend: HFBackend) -> list[list[int]]:
    return [backend.tokenizer.encode(p) for p in PROMPTS]


def test_greedy_is_deterministic_and_batch_independent(backend, contexts):
    batched = backend.generate(contexts, max_new_tokens=[12, 5, 9])
    again = backend.generate(contexts, max_new_tokens=[12, 5, 9])
    alone = [backend.generate([c], max_new_tokens=n)[0] for c, n in zip(contexts, [12, 5, 9], strict=True)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in again] == [g.token_ids for g in alone]
    for chunk, cap in zip(batched, [12, 5, 9], strict=True):
        assert chunk.finish_reason == "length" and len(chunk.token_ids) == len(chunk.logprobs) == cap
        assert decode(backend.tokenizer, chunk.token_ids) == chunk.text
        assert all(lp <= 0 for lp in chunk.logprobs)


def test_chunk_ends_right_after_the_first_stop_string(backend, contexts):
    free = backend.generate(contexts[:1], max_new_tokens=12)[0]
    ids = free.token_ids
    stop = decode(backend.tokenizer, ids[4:6])  # a stop string the model is known to produce
    other = backend.generate(contexts[1:], max_new_tokens=12)[0]
    chunks = backend.generate([contexts[0], contexts[1]], max_new_tokens=12, stop=[stop])
    first_end = free.text.find(stop) + len(stop)
    assert chunks[0].finish_reason == "stop" and chunks[0].text == free.text[:first_end]
    assert decode(backend.tokenizer, chunks[0].token_ids) == chunks[0].text
    assert chunks[0].token_ids == ids[: len(chunks[0].token_ids)]
    # The other sequence is not affected by the first one's stop.
    assert chunks[1].token_ids == other.token_ids or stop in other.text


def test_stop_inside_a_token_cuts_the_text_and_reencodes_the_tail(backend, contexts):
    free = backend.generate(contexts[1:2], max_new_tokens=6)[0]
    long_token = max(free.token_ids, key=lambda i: len(decode(backend.tokenizer, [i])))
    piece = decode(backend.tokenizer, [long_token])
    assert len(piece) >= 3, piece
    stop = piece[:-1]
    chunk = backend.generate(contexts[1:2], max_new_tokens=6, stop=[stop])[0]
    assert chunk.text.endswith(stop) and chunk.finish_reason == "stop"
    assert decode(backend.tokenizer, chunk.token_ids) == chunk.text
    assert chunk.retokenized >= 1 and all(math.isnan(lp) for lp in chunk.logprobs[-chunk.retokenized :])


def test_stop_token_ends_the_chunk_with_the_token(backend, contexts):
    free = backend.generate(contexts[:1], max_new_tokens=8)[0]
    token = free.token_ids[2]
    chunk = backend.generate(contexts[:1], max_new_tokens=8, stop_token_ids=[token])[0]
    assert chunk.finish_reason == "eos" and chunk.token_ids == free.token_ids[: free.token_ids.index(token) + 1]


def test_seeded_sampling_is_reproducible(backend, contexts):
    def sample(seed: int) -> list[list[int]]:
        sampler = HFBackend(backend.model, backend.tokenizer, temperature=1.0, seed=seed)
        return [g.token_ids for g in sampler.generate(contexts, max_new_tokens=6)]

    assert sample(3) == sample(3) != sample(4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completions_app(backend: HFBackend):
    """A vLLM-like /v1/completions over the HF backend: the stop string is trimmed unless asked for, EOS text is
    never in the output, and ``stop_reason`` says which stop string ended the text."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/completions")
    def completions(body: dict) -> dict:
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else backend.tokenizer.encode(prompt)
        stop = body.get("stop") or []
        chunk = backend.generate(
            [ids], max_new_tokens=body["max_tokens"], stop=stop, stop_token_ids=body.get("stop_token_ids")
        )[0]
        text, stop_reason, finish = chunk.text, None, "length"
        if chunk.finish_reason == "eos":
            text, finish = decode(backend.tokenizer, chunk.token_ids[:-1]), "stop"
        elif chunk.finish_reason == "stop":
            stop_reason, finish = next(s for s in stop if text.endswith(s)), "stop"
            if not body.get("include_stop_str_in_output"):
                text = text[: -len(stop_reason)]
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "finish_reason": finish,
                    "stop_reason": stop_reason,
                    "logprobs": {
                        "tokens": [],
                        "token_logprobs": chunk.logprobs,
                        "top_logprobs": None,
                        "text_offset": [],
                    },
                }
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(chunk.token_ids),
                "total_tokens": len(ids) + len(chunk.token_ids),
            },
        }

    return app


@pytest.fixture(scope="module")
def server_url(backend):
    import httpx
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_completions_app(backend), host="127.0.0.1", port=port, log_level="error"))
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


def test_openai_backend_matches_the_hf_backend_over_http(backend, contexts, server_url):
    from agents.generation.openai_backend import OpenAIBackend

    remote = OpenAIBackend(server_url, "tiny-qwen2", backend.tokenizer)
    free = backend.generate(contexts, max_new_tokens=8)
    stop = decode(backend.tokenizer, free[0].token_ids[3:5])
    eos = free[1].token_ids[2]
    for stops, stop_ids in (([], None), ([stop], None), ([], [eos])):
        local = backend.generate(contexts, max_new_tokens=8, stop=stops, stop_token_ids=stop_ids)
        served = remote.generate(contexts, max_new_tokens=8, stop=stops, stop_token_ids=stop_ids)
        assert [g.text for g in served] == [g.text for g in local]
        assert [g.finish_reason for g in served] == [g.finish_reason for g in local]
        assert all(decode(backend.tokenizer, g.token_ids) == g.text for g in served)
