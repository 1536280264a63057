"""The learner-memory estimate: its parameter counts are those of the real Hugging Face models of each Qwen2.5
shape, its terms follow the strategy's rules, and bad input names the argument."""

from __future__ import annotations

import pytest
import torch

from agents.training.memory import GIB, QWEN25_SHAPES, largest_trainable, learner_memory


@pytest.mark.parametrize("name", list(QWEN25_SHAPES))
def test_parameter_count_is_the_models(name):
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = QWEN25_SHAPES[name]
    config = Qwen2Config(**shape.qwen2_config_kwargs(), head_dim=shape.head_dim)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForCausalLM.from_config(config)
    assert shape.parameters() == sum(p.numel() for p in model.parameters())


def test_the_published_sizes():
    billions = {name: round(shape.parameters() / 1e9, 2) for name, shape in QWEN25_SHAPES.items()}
    assert billions == {"0.5B": 0.49, "1.5B": 1.54, "3B": 3.09, "7B": 7.62, "14B": 14.77, "32B": 32.76, "72B": 72.71}


def test_fsdp_shards_the_training_state_and_ddp_replicates_it():
    shape = QWEN25_SHAPES["7B"]
    params = shape.parameters()
    ddp = learner_memory(shape, strategy="ddp", dtype="float32", world_size=1)
    assert (ddp.weights, ddp.gradients, ddp.optimizer, ddp.reference) == (
        4 * params,
        4 * params,
        8 * params,
        4 * params,
    )
    pure_bf16 = learner_memory(shape, strategy="ddp", dtype="bfloat16", world_size=1)
    assert pure_bf16.weights == ddp.weights // 2 and pure_bf16.optimizer == ddp.optimizer // 2
    one, eight = (learner_memory(shape, strategy="fsdp", world_size=n) for n in (1, 8))
    assert eight.optimizer == one.optimizer // 8 and eight.gradients == one.gradients // 8
    # What is gathered (embeddings, two layers) and the activations are not sharded.
    assert eight.total - eight.activations < (one.total - one.activations) / 4
    no_kl = learner_memory(shape, strategy="fsdp", world_size=8, kl_reference=False)
    assert no_kl.reference == 0 and no_kl.total == eight.total - eight.reference
    lora = learner_memory(shape, strategy="lora")
    assert lora.reference == 0 and lora.optimizer < ddp.optimizer / 100


def test_checkpointing_keeps_one_layer_of_activations():
    # 8 x 8192 tokens, so that activations, not the optimizer step's buffer, are the larger transient.
    shape = QWEN25_SHAPES["7B"]
    full, checkpointed = (
        learner_memory(shape, gradient_checkpointing=c, micro_batch_size=8, loss_tokens=0) for c in (False, True)
    )
    assert checkpointed.activations < full.activations / 10
    assert checkpointed.weights == full.weights


def test_what_fits_where():
    # 7B in full fine-tuning needs FSDP: DDP in pure bfloat16 alone takes 8 bytes a parameter plus the reference.
    assert learner_memory(QWEN25_SHAPES["7B"], strategy="ddp", world_size=8).total > 80 * GIB
    assert largest_trainable(80, 8, strategy="fsdp") in ("14B", "32B")
    assert largest_trainable(80, 1, strategy="lora") is not None
    assert largest_trainable(1, 1, strategy="ddp") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"strategy": "zero3"}, "strategy"), ({"dtype": "fp16"}, "dtype"), ({"world_size": 0}, "world_size")],
)
def test_bad_input_names_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        learner_memory(QWEN25_SHAPES["0.5B"], **kwargs)
