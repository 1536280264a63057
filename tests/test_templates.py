"""SPEC §3: named templates, user templates from a string or a file, base and chat rendering."""

from __future__ import annotations

import pytest

from research_env.templates import (
    TEMPLATES,
    PromptTemplate,
    register_template,
    render_prompt,
    resolve_template,
)
from research_env.tokenizer import build_qwen25_tokenizer

QUESTION = "Who wrote {braces} and \\boxed{x}?"


def test_registry_holds_both_research_templates():
    assert TEMPLATES["re_search_template"].kind == "base"
    assert TEMPLATES["re_search_template_sys"].kind == "system"
    for template in TEMPLATES.values():
        for tag in ("<think>", "<search>", "<result>", "<answer>", "\\boxed{}"):
            assert tag in template.text


def test_base_prompt_inserts_the_question_verbatim_and_ends_with_assistant():
    prompt = render_prompt(QUESTION, resolve_template(None, apply_chat=False))
    assert f"User: {QUESTION}\nAssistant:" in prompt and prompt.endswith("Assistant:")


def test_chat_prompt_uses_the_tokenizer_chat_template():
    tokenizer = build_qwen25_tokenizer()
    prompt = render_prompt(QUESTION, resolve_template(None, apply_chat=True), True, tokenizer)
    system = TEMPLATES["re_search_template_sys"].text
    assert prompt == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_user_templates_from_string_file_and_registry(tmp_path):
    assert resolve_template("Q: {prompt} A:", False).kind == "base"
    assert resolve_template("You answer questions.", True).kind == "system"
    path = tmp_path / "mine.txt"
    path.write_text("Question: {prompt}\nAnswer:")
    from_file = resolve_template(str(path), False)
    assert (from_file.name, render_prompt("q?", from_file)) == ("mine", "Question: q?\nAnswer:")
    register_template("mine", "Custom {prompt}")
    assert render_prompt("q", resolve_template("mine", False)) == "Custom q"


def test_bad_templates_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_template(str(tmp_path / "missing.txt"), False)
    with pytest.raises(ValueError, match="no \\{prompt\\} slot"):
        PromptTemplate("x", "no slot", "base")
    with pytest.raises(ValueError, match="apply_chat=True"):
        render_prompt("q", TEMPLATES["re_search_template_sys"], apply_chat=False)
    with pytest.raises(ValueError, match="chat template"):
        render_prompt("q", TEMPLATES["re_search_template_sys"], apply_chat=True, tokenizer=None)
