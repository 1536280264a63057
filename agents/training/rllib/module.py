"""The policy as an RLlib module: a Hugging Face causal LM (optionally with LoRA adapters, bfloat16, gradient
checkpointing, FSDP2 shards) plus, on the learner, a frozen reference for the KL term. State is handled as
torch tensors, not RLlib's numpy."""

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
from agents.training.fsdp import gathered

#: RLlib builds modules from spaces: a transcript of token ids in, one token id out.
TOKEN_SPACE = gym.spaces.Box(0, np.iinfo(np.int64).max, (), np.int64)
TRANSCRIPT_SPACE = gym.spaces.Sequence(TOKEN_SPACE)
#: Batch columns the module and the learner read (all [B, T] except advantages and loss_weight, [B]).
TOKEN_COLUMNS = ("input_ids", "attention_mask", "loss_mask", "old_logprobs")


class CausalLMModule(TorchRLModule, InferenceOnlyAPI):
    """A causal LM as a :class:`TorchRLModule`.

    ``model_config`` keys: ``model`` (local checkpoint directory, None = the tiny default), ``temperature`` (the
    rollouts', at which log-probs are computed), ``dtype``
    (``"float32"``, ``"bfloat16"``, or None: bfloat16 where CUDA is available, else float32), ``kl_coef``
    (a reference is built only when > 0 and only on the learner), ``lora`` (None or a dict of
    ``peft.LoraConfig`` arguments), ``gradient_checkpointing`` (recompute each decoder layer in the
    backward pass instead of keeping its activations), ``strategy`` (``"ddp"`` or ``"fsdp"``).

    The reference, without a second trainable copy: with LoRA it is the same network with its adapters
    disabled; for full fine-tuning it is a frozen copy in the compute dtype (bfloat16 on GPU: 2 bytes per
    parameter next to the 8-16 that the trained weights, gradients and AdamW's moments take), sharded like the
    policy under FSDP. We keep it on the GPU rather than offload it or precompute reference log-probs on
    the driver: offloading moves the whole model over PCIe for every micro-batch, precomputing needs a second
    pass over the batch with the same weights resident anyway, and the sharded copy costs 2/N bytes per
    parameter. With ``kl_coef == 0`` there is no reference at all.

    With ``strategy="fsdp"`` the learner shards the module (:meth:`shard`) once the process group exists;
    the trained weights then stay float32 (FSDP's master copy) and ``dtype`` is the compute dtype.

    ``get_state`` returns CPU tensors in their own dtype (RLlib's default converts to numpy, which has no
    bfloat16 and copies everything), unsharded: the same state under DDP and FSDP, so a checkpoint of one
    resumes with the other. The frozen reference is never part of the state, since it is rebuilt from
    ``model``, and with LoRA only the adapter weights are.

    ``forward_train`` gives per-token ``logprobs`` and ``entropy`` [B, T] and, with a reference,
    ``ref_logprobs`` [B, T], on the positions of ``loss_mask`` (0 elsewhere); rollouts do not call the
    module but generate with :attr:`model` directly.
    """

    def setup(self) -> None:
        config = self.model_config
        self.compute_dtype = getattr(torch, config.get("dtype") or default_dtype())
        learner = not self.inference_only
        self.fsdp = learner and config.get("strategy", "ddp") == "fsdp"
        weights_dtype = torch.float32 if self.fsdp else self.compute_dtype  # FSDP's master weights
        self.model, self.tokenizer = load_causal_lm(config.get("model"), device="cpu", dtype=weights_dtype)
        self.lora = config.get("lora")
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(**self.lora))
        self.reference: torch.nn.Module | None = None
        if learner and config.get("kl_coef", 0.0) > 0 and not self.lora:
            self.reference = copy.deepcopy(self.model).to(self.compute_dtype).requires_grad_(False).eval()
        if learner and config.get("gradient_checkpointing"):
            # HF recomputes layers only in train mode; our models have no dropout, so nothing else changes.
            self.model.config.use_cache = False
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.train()
        #: Under FSDP, the unsharded state as rank 0 last gathered it (see :meth:`gather_state`).
        self._gathered_state: dict[str, torch.Tensor] | None = None

    def shard(self) -> None:
        """Shard the policy and the reference over the process group (FSDP2) and gather the initial state."""
        from agents.training.fsdp import shard_policy

        shard_policy(self, self.model, self.reference, self.compute_dtype)
        self.gather_state()

    def gather_state(self) -> None:
        """Gather the unsharded weights onto rank 0's CPU for :meth:`get_state`. A collective: the learner
        calls it on every rank after each update, because RLlib asks rank 0 alone for the state."""
        from agents.training.fsdp import full_model_state

        self._gathered_state = full_model_state(self.model)

    def get_non_inference_attributes(self) -> list[str]:
        return ["reference"]

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ids, attention = batch["input_ids"], batch["attention_mask"]
        logprobs, _ = token_logprobs(self.model, ids, attention, temperature=self._temperature)
        return {"logprobs": logprobs}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Only the policy's own tokens carry loss, so the LM head runs on those positions alone: the prompt
        # and result blocks (most of a transcript) never get [T, V] logits.
        ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        temperature = self._temperature
        logprobs, entropy = masked_token_logprobs(self.model, ids, attention, mask, True, temperature)
        out = {"logprobs": logprobs, "entropy": entropy}
        if self.model_config.get("kl_coef", 0.0) > 0:
            with torch.no_grad(), self._reference() as reference, gathered(reference):
                out["ref_logprobs"] = masked_token_logprobs(reference, ids, attention, mask, temperature=temperature)[0]
        return out

    @property
    def _temperature(self) -> float:
        """The rollouts' sampling temperature (greedy rollouts, 0, score the plain distribution)."""
        return float(self.model_config.get("temperature") or 1.0)

    @contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            with nullcontext():
                yield self.reference

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        inference_only: bool = False,
        **kwargs: Any,
    ) -> StateDict:
        if self._gathered_state is not None:
            return dict(self._gathered_state)
        return {
            name: tensor.detach().cpu()
            for name, tensor in self.model.state_dict().items()
            if not self.lora or _is_adapter(name)
        }

    def set_state(self, state: StateDict) -> None:
        state = {name: torch.as_tensor(value) for name, value in state.items()}
        if self._gathered_state is not None:  # sharded: every rank gets the whole state and keeps its shard
            from agents.training.fsdp import load_full_model_state

            load_full_model_state(self.model, state)
            self.gather_state()
            return
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or (not self.lora and missing):
            raise ValueError(
                f"the state does not match the model {self.model_config.get('model')!r}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}; was it saved with other "
                "--model/--lora settings?"
            )


def default_dtype() -> str:
    """bfloat16 where CUDA is available (the learner's GPU), float32 on CPU, as ``load_causal_lm`` chooses."""
    return "bfloat16" if torch.cuda.is_available() else "float32"


def _is_adapter(name: str) -> bool:
    return re.search(r"\.lora_[A-Za-z_]+\.", name) is not None
