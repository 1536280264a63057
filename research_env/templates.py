"""Prompt templates (SPEC §3): a named registry, user templates from a string or a file, and the
rendering of a question into the prompt, plain-text for base models or through a tokenizer's chat
template for instruct models."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Where a base template inserts the question. Filled with ``str.replace``, so templates may contain
#: literal braces such as ``\\boxed{}`` without escaping.
QUESTION_SLOT = "{prompt}"

_INSTRUCTIONS = (
    "Think step by step inside <think> </think> before answering. When you need a fact you do not "
    "know, call the Wikipedia search tool by writing a query inside <search> </search>; the tool "
    "then adds the retrieved passages inside <result> </result>, and you can think and search again. "
    "Give the final answer inside <answer> </answer>, with the exact answer alone in LaTeX "
    "\\boxed{} at its end. Example: <think> I need the birthplace of X. </think> "
    "<search> X birthplace </search> <result> retrieved passages </result> "
    "<think> The passages say X was born in Y. </think> <answer> X was born in \\boxed{Y} </answer>."
)

_BASE_TEXT = (
    "A dialogue between a User and an Assistant. The User asks a question and the Assistant answers it "
    "after reasoning, and may look things up on Wikipedia while reasoning. "
    + _INSTRUCTIONS
    + f"\nUser: {QUESTION_SLOT}\nAssistant:"
)

_SYSTEM_TEXT = (
    "You are a helpful assistant that answers questions step by step and may look things up on "
    "Wikipedia while reasoning. " + _INSTRUCTIONS
)


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt. ``kind="base"``: a whole prompt with a ``{prompt}`` slot for the question.
    ``kind="system"``: a system message; the question becomes the user message of a chat."""

    name: str
    text: str
    kind: Literal["base", "system"]

    def __post_init__(self) -> None:
        if self.kind == "base" and QUESTION_SLOT not in self.text:
            raise ValueError(f"base template {self.name!r} has no {QUESTION_SLOT} slot for the question")


class TemplateFormatError(ValueError):
    """A template written for ``str.format`` (doubled braces) that cannot be read as one."""


def unescape_format_template(text: str, name: str = "custom") -> str:
    """Undo ``str.format`` escaping: ReSearch's templates double their literal braces (``\\boxed{{}}``) because
    its code fills them with ``template.format(prompt=question)``, while ours fills ``{prompt}`` with
    ``str.replace``. A text without ``{{`` is returned as it is, so ``\\boxed{}`` or nested LaTeX such as
    ``\\boxed{\\text{x}}`` stays literal."""
    if "{{" not in text:
        return text
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as error:
        raise TemplateFormatError(
            f"template {name!r} doubles some braces like a str.format template but is not one ({error}): "
            "double every literal brace, or none"
        ) from None
    fields = {field for _, field, _, _ in pieces if field is not None}
    if fields - {"prompt"}:
        raise TemplateFormatError(
            f"template {name!r} is a str.format template with fields {sorted(fields - {'prompt'})}: only "
            f"{QUESTION_SLOT} (the question) is filled; double the braces of literal text"
        )
    return "".join(literal + (QUESTION_SLOT if field is not None else "") for literal, field, _, _ in pieces)


TEMPLATES: dict[str, PromptTemplate] = {}
_TEMPLATE_SUFFIXES = frozenset({".txt", ".md", ".j2", ".jinja", ".tmpl"})


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a long literal template is not a valid file name
        return False


def register_template(name: str, text: str, kind: Literal["base", "system"] = "base") -> PromptTemplate:
    """Add (or replace) a named template, e.g. to evaluate a released checkpoint with its exact prompt."""
    template = PromptTemplate(name, unescape_format_template(text, name), kind)
    TEMPLATES[name] = template
    return template


register_template("re_search_template", _BASE_TEXT, "base")
register_template("re_search_template_sys", _SYSTEM_TEXT, "system")


def default_template_name(apply_chat: bool) -> str:
    return "re_search_template_sys" if apply_chat else "re_search_template"


def resolve_template(template: str | os.PathLike | PromptTemplate | None, apply_chat: bool) -> PromptTemplate:
    """A template from a registered name, a file path, a literal string, or None (the default).

    A literal string or file with a ``{prompt}`` slot is a base template; without one it is a
    system message.
    """
    if isinstance(template, PromptTemplate):
        return template
    if template is None:
        return TEMPLATES[default_template_name(apply_chat)]
    if isinstance(template, str) and template in TEMPLATES:
        return TEMPLATES[template]
    path = Path(template)
    if isinstance(template, os.PathLike) or _is_file(path):
        if not path.is_file():
            raise FileNotFoundError(f"template file {path} does not exist; known names: {sorted(TEMPLATES)}")
        text, name = path.read_text(encoding="utf-8"), path.stem
    elif path.suffix in _TEMPLATE_SUFFIXES and QUESTION_SLOT not in str(template):
        raise FileNotFoundError(f"template file {path} does not exist; known names: {sorted(TEMPLATES)}")
    else:
        text, name = str(template), "custom"
    text = unescape_format_template(text, name)
    return PromptTemplate(name, text, "base" if QUESTION_SLOT in text else "system")


def render_prompt(question: str, template: PromptTemplate, apply_chat: bool = False, tokenizer: Any = None) -> str:
    """The prompt text the model sees before its response.

    With ``apply_chat`` the tokenizer's chat template renders a system message (or, for a base
    template, the filled template as the user message) and the generation prompt.
    """
    if not apply_chat:
        if template.kind != "base":
            raise ValueError(f"template {template.name!r} is a system message: use it with apply_chat=True")
        return template.text.replace(QUESTION_SLOT, question)
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("apply_chat=True needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(chat_messages(question, template), tokenize=False, add_generation_prompt=True)


def chat_messages(question: str, template: PromptTemplate) -> list[dict[str, str]]:
    """A prompt as chat messages: the system template and the question, or the filled base template as the
    user turn. The one place this rule lives, for the env's rendering and for messages-based servers."""
    if template.kind == "system":
        return [{"role": "system", "content": template.text}, {"role": "user", "content": question}]
    return [{"role": "user", "content": template.text.replace(QUESTION_SLOT, question)}]
