"""``ChatTemplate``: an instruct-model episode as chat messages, verified against the model's chat template."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from research_env.templates import chat_messages


class ChatTemplateError(ValueError):
    """The chat template, the env's prompt and the env's EOS string do not agree."""


class ChatTemplate(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["messages"]``: the episode as the chat a messages-based backend would be sent.

    The env (``apply_chat=True``) renders its prompt with *its* tokenizer; a trainer or server uses the
    *model's* tokenizer. This wrapper makes a mismatch an error instead of a silently different prompt:

    * at construction, the env's EOS string must be a single token of ``tokenizer`` (else a generator
      stopping on the EOS id never ends a turn where the env expects it);
    * at reset, ``tokenizer``'s chat template applied to the system and user messages (with the
      generation prompt) must give the env's prompt exactly;
    * at every step, rendering ``messages`` with ``continue_final_message=True`` (what an
      OpenAI-compatible server such as vLLM does to continue the assistant turn) must give the whole
      transcript exactly. Templates that rewrite assistant turns (e.g. ones that drop ``<think>`` text)
      fail here rather than training on one text and serving another.

    ``messages`` holds the system message (a ``kind="system"`` template) or the filled base template as
    the user message, the question, and from the first step on the assistant's response so far, result
    blocks included. Mismatches raise :class:`ChatTemplateError`.

    Example:
        >>> import gymnasium as gym, research_env
        >>> from research_env.tokenizer import build_qwen25_tokenizer
        >>> from wrappers import ChatTemplate
        >>> tokenizer = build_qwen25_tokenizer()
        >>> env = ChatTemplate(gym.make("ReSearch-MuSiQue-v0", apply_chat=True, tokenizer=tokenizer), tokenizer)
        >>> _, info = env.reset(seed=0)
        >>> [m["role"] for m in info["messages"]]
        ['system', 'user']
        >>> _, _, _, _, info = env.step("<think> I should search. </think>")
        >>> info["messages"][-1]
        {'role': 'assistant', 'content': '<think> I should search. </think>'}
    """

    def __init__(self, env: gym.Env, tokenizer: Any) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not env.unwrapped.apply_chat:
            raise ChatTemplateError("ChatTemplate is for instruct models: make the env with apply_chat=True")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ChatTemplateError(f"{type(tokenizer).__name__} has no chat template")
        eos = env.unwrapped.eos_token
        if len(tokenizer(eos, add_special_tokens=False)["input_ids"]) != 1:
            raise ChatTemplateError(
                f"the env ends a response at {eos!r}, which the tokenizer does not encode as one "
                "token; pass the model's end-of-turn token as the env's eos_token"
            )
        self.tokenizer = tokenizer

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        messages = self.messages()
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if rendered != self.env.unwrapped.prompt:
            raise ChatTemplateError(
                "the env's prompt differs from the tokenizer's chat template rendering of the same "
                "messages: make the env with tokenizer= the model's tokenizer"
            )
        return obs, {**info, "messages": messages}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        messages = self.messages()
        if messages[-1]["role"] == "assistant":
            transcript = self.env.unwrapped.prompt + self.env.unwrapped.response
            try:
                rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
            except ValueError:  # transformers' way of saying that the template rewrote the final message
                rendered = None
            if rendered != transcript:
                raise ChatTemplateError(
                    "the chat template does not render the assistant's response verbatim, so a "
                    "chat backend given info['messages'] would see another transcript"
                )
        return obs, reward, terminated, truncated, {**info, "messages": messages}

    def messages(self) -> list[dict[str, str]]:
        """The episode so far as chat messages (the assistant turn only once it has text)."""
        env = self.env.unwrapped
        messages = chat_messages(env.record.question, env.template)
        if env.response:
            messages.append({"role": "assistant", "content": env.response})
        return messages
