"""The GRPO learner: the clipped, KL- and entropy-regularised loss of ``agents.training.algorithms`` on RLlib's
TorchLearner, with gradient accumulation over micro-batches because full-vocabulary logits of long
transcripts ([B, T, 151k]) do not fit in memory at once."""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID, TensorType

from agents.training.algorithms import policy_loss
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

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        # Only trainable tensors: the frozen reference (or LoRA's frozen base) has no gradients.
        params = [p for p in self.get_parameters(self.module[module_id]) if p.requires_grad]
        self.register_optimizer(module_id=module_id, optimizer=torch.optim.AdamW(params, weight_decay=0.0),
                                params=params, lr_or_lr_schedule=config.lr_schedule)

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
                # DDP all-reduces on the last backward only; the others accumulate locally.
                local_only = self.distributed and i < len(starts) - 1
                with module.no_sync() if local_only else nullcontext():
                    fwd_out = self.module.forward_train({module_id: micro})
                    loss = self.compute_losses(fwd_out=fwd_out, batch={module_id: micro})[module_id]
                    loss.backward()
                total += loss.detach()
            losses[module_id] = total
            # Diagnostics are means over the policy tokens of all micro-batches.
            self.metrics.log_dict({(module_id, name): _weighted_mean(values)
                                   for name, values in self._micro_metrics.items()}, reduce="mean", window=1)
            gradients.update({self.get_param_ref(p): p.grad for p in self.get_parameters(self.module[module_id])
                              if p.grad is not None})
        self.apply_gradients(self.postprocess_gradients(gradients))
        return losses

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id: ModuleID, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, TensorType]) -> TensorType:
        loss, metrics = policy_loss(
            fwd_out["logprobs"], batch["old_logprobs"], batch["advantages"], batch["loss_mask"], self.loss_config,
            ref_logprobs=fwd_out.get("ref_logprobs"), entropy=fwd_out.get("entropy"))
        tokens = float(batch["loss_mask"].sum())
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
