"""In-place weight updates of a running vLLM engine: a worker extension (vLLM's ``worker_extension_cls``) that loads
a policy state dict into the model of every worker, so a trainer never rebuilds the engine after an update.

It runs inside vLLM's worker processes and imports nothing of ours beyond torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

#: What ``VLLMBackend`` passes as ``worker_extension_cls`` (vLLM resolves it by qualified name in each worker).
EXTENSION = "agents.generation.vllm_weights.PolicyWeightsExtension"


class PolicyWeightsExtension:
    """Mixed into vLLM's worker class, so ``LLM.collective_rpc("load_policy_weights", args=(state,))`` reaches it.

    The state maps Hugging Face parameter names (``model.layers.0.self_attn.q_proj.weight``) to tensors, as the
    learner's ``state_dict`` names them; the model's own ``load_weights`` maps them onto vLLM's fused layouts
    (q, k and v into one ``qkv_proj``) and casts to the engine's dtype. It must hold every weight of the model:
    vLLM's layerwise reload rebuilds each layer from what it is given (with LoRA, send the merged weights).
    """

    def load_policy_weights(self, path: str) -> None:
        """Reload this worker's model in place from the safetensors file ``path`` (see :func:`staged_state`).

        Through the worker's own ``reload_weights``: it undoes the kernel repacking of the loaded layers (the CPU
        backend repacks linear weights, so a plain ``load_weights`` finds empty parameters), loads the
        checkpoint-format tensors and repacks them.
        """
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = str(next(model.parameters()).device)
        head, embedding = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
        tied = head is not None and embedding is not None and head.weight is embedding.weight
        self.reload_weights(weights_iterator=iter(load_file(path, device=device).items()), is_checkpoint_format=True)  # type: ignore[attr-defined]
        if tied:
            # An output layer tied to the embedding (Qwen2.5 up to 3B) is not reprocessed by the reload (vLLM 0.32:
            # "tied parameters only reflect processing from one parent layer"), so it would keep computing with the
            # old weights (the CPU backend's packed copy): tie it again and let it process the new ones.
            if head.weight is not embedding.weight:
                head.tie_weights(embedding)
            head.quant_method.process_weights_after_loading(head)


def staged_state(state: Mapping[str, torch.Tensor], directory: str | os.PathLike | None = None) -> Path:
    """Write ``state`` to a safetensors file for :meth:`PolicyWeightsExtension.load_policy_weights`; the caller
    deletes it. The tensors travel as a file because vLLM's RPC from the engine core to its workers pickles its
    arguments, and the tensors it received over msgpack are memoryviews, which do not pickle (vLLM 0.32). In
    shared memory (``/dev/shm``) where there is one, so the copy stays in RAM.
    """
    shm = Path("/dev/shm")
    directory = directory or (shm if shm.is_dir() and os.access(shm, os.W_OK) else None)
    handle, name = tempfile.mkstemp(prefix="research-gym-policy-", suffix=".safetensors", dir=directory)
    os.close(handle)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state.items():  # a tied output layer shares the embedding's storage: send it once
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[key] = tensor.detach().contiguous().cpu()
    save_file(tensors, name)
    return Path(name)
