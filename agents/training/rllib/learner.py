"""The GRPO learner: the clipped, KL- and entropy-regularised loss of ``agents.training.algorithms`` on RLlib's
TorchLearner, with gradient accumulation over micro-batches because full-vocabulary logits of long
transcripts ([B, T, 151k]) do not fit in memory at once, and FSDP2 in place of DDP when the config says so."""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID, TensorType

from agents.training.algorithms import masked_mean, policy_loss
from agents.training.reporting import LOGPROB_DIFF
from agents.training.rllib.module import TOKEN_COLUMNS
from agents.training.rllib.rllib_private import AccumulatingTorchLearner


class GRPOTorchLearner(AccumulatingTorchLearner):
    """One optimizer step per train batch: the batch is cut into micro-batches of
    ``config.micro_batch_size`` trajectories, each forwarded and back-propagated on its own, and the
    summed gradients are clipped and applied once.

    Each row carries a ``loss_weight`` set on the driver (see ``GRPO._loss_weights``) such that the
    weighted micro-batch losses, summed over micro-batches and averaged over learners by DDP, equal
    the loss of the whole batch on one learner: gradients do not depend on how the batch is split.
    """

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self.loss_config = self.config.settings.loss_config()

    @property
    def sharded(self) -> bool:
        """FSDP2 instead of DDP: weights, gradients and AdamW's moments split over the learners."""
        return self.config.learner_strategy == "fsdp"

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        if self.sharded:
            # The first hook after RLlib moved the module to its device and before an optimizer holds its
            # parameters: sharding replaces them with DTensors, so it has to come first.
            self.module[module_id].unwrapped().shard()
        # Only trainable tensors: the frozen reference (or LoRA's frozen base) has no gradients.
        params = [p for p in self.get_parameters(self.module[module_id]) if p.requires_grad]
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.AdamW(params, weight_decay=0.0),
            params=params,
            lr_or_lr_schedule=config.lr_schedule,
        )
        if self.sharded:
            self.gather_optimizer_state()

    @override(AccumulatingTorchLearner)
    def accumulate_and_apply(self, batch: dict[str, Any]) -> dict[ModuleID, TensorType]:
        for module_id in batch:
            for _, optimizer in self.get_optimizers_for_module(module_id):
                optimizer.zero_grad(set_to_none=True)
        losses: dict[ModuleID, TensorType] = {}
        gradients: dict[Any, torch.Tensor] = {}
        for module_id, data in batch.items():
            module = self.module[module_id]
            rows = int(data["advantages"].shape[0])
            starts = list(range(0, rows, self.config.micro_batch_size))
            total = torch.zeros((), device=self.device)
            self._micro_metrics: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for i, start in enumerate(starts):
                micro = _micro_batch(data, start, start + self.config.micro_batch_size)
                # DDP all-reduces on the last backward only; the others accumulate locally. FSDP
                # reduce-scatters every micro-batch, so that no learner ever holds a whole gradient.
                local_only = self.distributed and not self.sharded and i < len(starts) - 1
                with module.no_sync() if local_only else nullcontext():
                    # FSDP's hooks run on the module's call; RLlib's forward_train bypasses it.
                    fwd_out = (
                        {module_id: module(micro)} if self.sharded else self.module.forward_train({module_id: micro})
                    )
                    loss = self.compute_losses(fwd_out=fwd_out, batch={module_id: micro})[module_id]
                    loss.backward()
                total += loss.detach()
            losses[module_id] = total
            # Diagnostics are means over the policy tokens of all micro-batches.
            self.metrics.log_dict(
                {(module_id, name): _weighted_mean(values) for name, values in self._micro_metrics.items()},
                reduce="mean",
                window=1,
            )
            gradients.update(
                {
                    self.get_param_ref(p): p.grad
                    for p in self.get_parameters(self.module[module_id])
                    if p.grad is not None
                }
            )
        self.apply_gradients(self.postprocess_gradients(gradients))
        return losses

    @override(TorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self.sharded:  # every rank is here: gather what RLlib will ask rank 0 alone for
            for module_id in self.module.keys():  # noqa: SIM118  (a MultiRLModule, not a dict)
                self.module[module_id].unwrapped().gather_state()
            self.gather_optimizer_state()

    @override(TorchLearner)
    def postprocess_gradients_for_module(
        self, *, module_id: ModuleID, config: Any = None, module_gradients_dict: dict[Any, torch.Tensor]
    ) -> dict[Any, torch.Tensor]:
        if not self.sharded or not config.grad_clip:
            return super().postprocess_gradients_for_module(
                module_id=module_id, config=config, module_gradients_dict=module_gradients_dict
            )
        # RLlib's global norm stacks per-tensor norms, which sharded gradients cannot be; torch's clipping
        # all-reduces the shards' squared norms. TorchLearner's parameter references are the parameters.
        for name, optimizer in self.get_optimizers_for_module(module_id):
            params = list(self.filter_param_dict_for_optimizer(module_gradients_dict, optimizer))
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip).full_tensor()
            self.metrics.log_value((module_id, f"gradients_{name}_global_norm"), float(norm), window=1)
        return module_gradients_dict

    def gather_optimizer_state(self) -> None:
        """Gather AdamW's unsharded state onto rank 0's CPU, in the layout of an unsharded optimizer, for
        checkpoints (see ``rllib_private``). A collective, run on every rank after each update."""
        from agents.training.fsdp import full_optimizer_state

        self.gathered_optimizer_state = {
            f"{module_id}_{name}": {
                "module_id": module_id,
                "state": full_optimizer_state(self.module[module_id].unwrapped().model, optimizer),
            }
            for module_id in self.module.keys()  # noqa: SIM118  (a MultiRLModule, not a dict)
            for name, optimizer in self.get_optimizers_for_module(module_id)
        }

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Load an unsharded optimizer state (from FSDP or DDP) into the sharded optimizers, on every rank."""
        from agents.training.fsdp import load_full_optimizer_state

        for name, entry in state.items():
            module_id = entry["module_id"]
            optimizer = self.get_optimizer(module_id, name[len(module_id) + 1 :])
            load_full_optimizer_state(self.module[module_id].unwrapped().model, optimizer, entry["state"])
        self.gather_optimizer_state()

    @override(TorchLearner)
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        loss, metrics = policy_loss(
            fwd_out["logprobs"],
            batch["old_logprobs"],
            batch["advantages"],
            batch["loss_mask"],
            self.loss_config,
            ref_logprobs=fwd_out.get("ref_logprobs"),
            entropy=fwd_out.get("entropy"),
        )
        tokens = float(batch["loss_mask"].sum())
        with torch.no_grad():  # the sampling engine's log-probs against ours, on the same weights before an update
            gap = (fwd_out["logprobs"] - batch["old_logprobs"]).abs()  # [b, T]
            metrics[LOGPROB_DIFF] = masked_mean(gap, batch["loss_mask"]).item()
        for name, value in metrics.items():
            self._micro_metrics[name].append((value, tokens))
        return loss * batch["loss_weight"].sum()


def _micro_batch(data: Any, start: int, end: int) -> dict[str, torch.Tensor]:
    """Rows ``start:end`` less the rows that only pad a learner's shard (zero ``loss_weight``), with the right
    padding that no row of them needs cut off. Dropping them keeps an aggregation that counts rows exact; a
    micro-batch of padding alone is kept, so that this learner still takes part in DDP's all-reduce."""
    rows = torch.arange(start, min(end, len(data["loss_weight"])))
    real = rows[data["loss_weight"][rows] > 0]
    rows = real if len(real) else rows
    length = int(data["attention_mask"][rows].sum(dim=1).max())
    micro = {name: data[name][rows, :length] for name in TOKEN_COLUMNS}
    micro["advantages"] = data["advantages"][rows]
    micro["loss_weight"] = data["loss_weight"][rows]
    return micro


def _weighted_mean(values: list[tuple[float, float]]) -> float:
    return sum(v * w for v, w in values) / max(sum(w for _, w in values), 1.0)
