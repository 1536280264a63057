"""The one place where the RLlib trainer relies on a private RLlib API (checked on ray[rllib] 2.60.0).

RLlib's ``TorchLearner`` forwards a whole train batch at once (``_uncompiled_update``: ``forward_train`` on the
batch, then ``compute_losses``, ``compute_gradients``, ``apply_gradients``). Full-vocabulary logits of long
transcripts do not fit in memory at once, so our learner accumulates gradients over micro-batches, and RLlib has
no public hook between "a batch arrives" and "gradients are applied". The hook we take is ``Learner._update``.
For FSDP: ``TorchLearner._make_modules_ddp_if_necessary`` (RLlib's hook for custom wrapping, skipped: the module
is already sharded), and ``_get_optimizer_state``/``_set_optimizer_state``, because RLlib asks rank 0 alone for
the state (a sharded optimizer's state is on all ranks) and loads it with ``load_state_dict`` (which would put
whole tensors where shards belong). Everything else the learner uses (``compute_losses``,
``postprocess_gradients``, ``apply_gradients``, ``get_optimizers_for_module``, ``get_parameters``,
``get_param_ref``, ``device``) is public.
When upgrading Ray, re-check ``TorchLearner._update``'s signature and return value, and the optimizer state's
layout (``{name: {"module_id", "state": optimizer.state_dict() as numpy}}``), here.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.torch_utils import convert_to_torch_tensor


class AccumulatingTorchLearner(TorchLearner):
    """A ``TorchLearner`` whose update of one batch is :meth:`accumulate_and_apply`, the subclass's own."""

    @override(TorchLearner)
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        # RLlib 2.60 expects (fwd_out, loss_per_module, tensor_metrics) back.
        return {}, self.accumulate_and_apply(batch), {}

    def accumulate_and_apply(self, batch: dict[str, Any]) -> dict[Any, Any]:
        """Compute, accumulate and apply the gradients of ``batch``; return the loss of each module."""
        raise NotImplementedError

    #: True when the optimizers are sharded; then the two methods below provide their state instead.
    sharded = False
    #: The optimizers' unsharded state as rank 0 last gathered it, in RLlib's layout (torch tensors).
    gathered_optimizer_state: dict[str, Any] = {}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Load RLlib's layout of an unsharded optimizer state (torch tensors) into the sharded optimizers."""
        raise NotImplementedError

    @override(TorchLearner)
    def _make_modules_ddp_if_necessary(self) -> None:
        if not self.sharded:
            super()._make_modules_ddp_if_necessary()

    @override(TorchLearner)
    def _get_optimizer_state(self) -> dict[str, Any]:
        if not self.sharded:
            return super()._get_optimizer_state()
        return {
            name: {**entry, "state": convert_to_numpy(entry["state"])}
            for name, entry in self.gathered_optimizer_state.items()
        }

    @override(TorchLearner)
    def _set_optimizer_state(self, state: dict[str, Any]) -> None:
        if not self.sharded:
            return super()._set_optimizer_state(state)
        self.load_optimizer_state(
            {
                name: {**entry, "state": {**entry["state"], "state": convert_to_torch_tensor(entry["state"]["state"])}}
                for name, entry in state.items()
            }
        )
