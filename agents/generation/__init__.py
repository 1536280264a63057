"""Generation: backends that continue many token contexts at once (Hugging Face, vLLM, an OpenAI-compatible
server), all behind one interface, and the rollout loop that drives envs with them."""

from agents.generation.base import (
    Generation,
    GenerationBackend,
    decode,
    find_stop,
    finish_chunk,
    per_context,
    token_caps,
)

__all__ = ["Generation", "GenerationBackend", "decode", "find_stop", "finish_chunk", "per_context", "token_caps"]
