"""The policy as an RLlib module: a Hugging Face causal LM (optionally with LoRA adapters) plus, on the
learner, a frozen reference for the KL term. State is handled as torch tensors, not RLlib's numpy."""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import StateDict

from agents.policies.models import load_causal_lm
from agents.training.algorithms import masked_token_logprobs, token_logprobs

#: RLlib builds modules from spaces: a transcript of token ids in, one token id out.
TOKEN_SPACE = gym.spaces.Box(0, np.iinfo(np.int64).max, (), np.int64)
TRANSCRIPT_SPACE = gym.spaces.Sequence(TOKEN_SPACE)
#: Batch columns the module and the learner read (all [B, T] except advantages and loss_weight, [B]).
TOKEN_COLUMNS = ("input_ids", "attention_mask", "loss_mask", "old_logprobs")


class CausalLMModule(TorchRLModule, InferenceOnlyAPI):
    """A causal LM as a :class:`TorchRLModule`.

    ``model_config`` keys: ``model`` (local checkpoint directory, None = the tiny default), ``dtype``
    (``"float32"`` or ``"bfloat16"``), ``kl_coef`` (a reference copy is built only when > 0 and only on
    the learner), ``lora`` (None or a dict of ``peft.LoraConfig`` arguments).

    With LoRA the reference is the same network with its adapters disabled, so no second copy of the
    weights is held. ``get_state`` returns CPU tensors in their own dtype (RLlib's default converts to
    numpy, which has no bfloat16 and copies everything); the frozen reference is never part of the
    state, since it is rebuilt from ``model``, and with LoRA only the adapter weights are.

    ``forward_train`` gives per-token ``logprobs`` and ``entropy`` [B, T] and, with a reference,
    ``ref_logprobs`` [B, T], on the positions of ``loss_mask`` (0 elsewhere); rollouts do not call the
    module but generate with :attr:`model` directly.
    """

    def setup(self) -> None:
        config = self.model_config
        dtype = getattr(torch, config.get("dtype") or "float32")
        self.model, self.tokenizer = load_causal_lm(config.get("model"), device="cpu", dtype=dtype)
        self.lora = config.get("lora")
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(**self.lora))
        self.reference: torch.nn.Module | None = None
        if not self.inference_only and config.get("kl_coef", 0.0) > 0 and not self.lora:
            self.reference = copy.deepcopy(self.model).requires_grad_(False).eval()

    def get_non_inference_attributes(self) -> list[str]:
        return ["reference"]

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logprobs, _ = token_logprobs(self.model, batch["input_ids"], batch["attention_mask"])
        return {"logprobs": logprobs}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Only the policy's own tokens carry loss, so the LM head runs on those positions alone: the prompt
        # and result blocks (most of a transcript) never get [T, V] logits.
        ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        logprobs, entropy = masked_token_logprobs(self.model, ids, attention, mask, with_entropy=True)
        out = {"logprobs": logprobs, "entropy": entropy}
        if self.model_config.get("kl_coef", 0.0) > 0:
            with torch.no_grad(), self._reference() as reference:
                out["ref_logprobs"] = masked_token_logprobs(reference, ids, attention, mask)[0]
        return out

    @contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            with nullcontext():
                yield self.reference

    def get_state(self, components: str | Collection[str] | None = None, *,
                  not_components: str | Collection[str] | None = None, inference_only: bool = False,
                  **kwargs: Any) -> StateDict:
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()
                if not self.lora or _is_adapter(name)}

    def set_state(self, state: StateDict) -> None:
        state = {name: torch.as_tensor(value) for name, value in state.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or (not self.lora and missing):
            raise ValueError(f"the state does not match the model {self.model_config.get('model')!r}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}; was it saved with other "
                             "--model/--lora settings?")


def _is_adapter(name: str) -> bool:
    return re.search(r"\.lora_[A-Za-z_]+\.", name) is not None
