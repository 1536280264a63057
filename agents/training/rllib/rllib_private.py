"""The one place where the RLlib trainer relies on a private RLlib API (checked on ray[rllib] 2.60.0).

RLlib's ``TorchLearner`` forwards a whole train batch at once (``_uncompiled_update``: ``forward_train`` on the
batch, then ``compute_losses``, ``compute_gradients``, ``apply_gradients``). Full-vocabulary logits of long
transcripts do not fit in memory at once, so our learner accumulates gradients over micro-batches, and RLlib has
no public hook between "a batch arrives" and "gradients are applied". The hook we take is ``Learner._update``;
everything else the learner uses (``compute_losses``, ``postprocess_gradients``, ``apply_gradients``,
``get_optimizers_for_module``, ``get_parameters``, ``get_param_ref``, ``device``) is public.
When upgrading Ray, re-check ``TorchLearner._update``'s signature and return value here.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override


class AccumulatingTorchLearner(TorchLearner):
    """A ``TorchLearner`` whose update of one batch is :meth:`accumulate_and_apply`, the subclass's own."""

    @override(TorchLearner)
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        # RLlib 2.60 expects (fwd_out, loss_per_module, tensor_metrics) back.
        return {}, self.accumulate_and_apply(batch), {}

    def accumulate_and_apply(self, batch: dict[str, Any]) -> dict[Any, Any]:
        """Compute, accumulate and apply the gradients of ``batch``; return the loss of each module."""
        raise NotImplementedError
