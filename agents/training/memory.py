"""What fits where: an estimate of a GRPO learner's memory per GPU from a model's shape and the training
strategy (DDP, LoRA, FSDP over N GPUs, dtype, gradient checkpointing), and the Qwen2.5 shapes it is used on.

Pure arithmetic, no torch, Ray or gymnasium import: ``benchmarks/gpu_learner.py`` runs it where only torch
and transformers are installed.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
STRATEGIES = ("ddp", "lora", "fsdp")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Qwen2-architecture config that decide its memory (biases on q, k, v only)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def layer_parameters(self) -> int:
        h, kv, i = self.hidden_size, self.kv_size, self.intermediate_size
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases; o without
        return attention + 3 * h * i + 2 * h  # gate, up, down; two RMSNorms

    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def parameters(self) -> int:
        return self.embedding_parameters() + self.num_hidden_layers * self.layer_parameters() + self.hidden_size

    def lora_parameters(self, rank: int) -> int:
        """Adapter parameters of LoRA on every linear layer of the decoder ("all-linear" less the LM head)."""
        h, kv, i = self.hidden_size, self.kv_size, self.intermediate_size
        in_out = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)
        return self.num_hidden_layers * rank * in_out

    def qwen2_config_kwargs(self) -> dict[str, int | bool]:
        """Keyword arguments of ``transformers.Qwen2Config`` for this shape."""
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


#: The published Qwen2.5 base/instruct configs (their config.json), the models ReSearch trains.
QWEN25_SHAPES: dict[str, ModelShape] = {
    "0.5B": ModelShape(896, 24, 14, 2, 4864, 151936, True),
    "1.5B": ModelShape(1536, 28, 12, 2, 8960, 151936, True),
    "3B": ModelShape(2048, 36, 16, 2, 11008, 151936, True),
    "7B": ModelShape(3584, 28, 28, 4, 18944, 152064, False),
    "14B": ModelShape(5120, 48, 40, 8, 13824, 152064, False),
    "32B": ModelShape(5120, 64, 40, 8, 27648, 152064, False),
    "72B": ModelShape(8192, 80, 64, 8, 29568, 152064, False),
}


@dataclass(frozen=True)
class LearnerMemory:
    """Bytes per GPU of one learner step, by what holds them."""

    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations

    def gib(self) -> dict[str, float]:
        names = ("weights", "gradients", "optimizer", "reference", "activations", "total")
        return {name: getattr(self, name) / GIB for name in names}


def learner_memory(
    shape: ModelShape,
    *,
    strategy: str = "ddp",
    world_size: int = 1,
    dtype: str = "bfloat16",
    gradient_checkpointing: bool = False,
    kl_reference: bool = True,
    micro_batch_size: int = 2,
    sequence_length: int = 8192,
    loss_tokens: int | None = None,
    lora_rank: int = 16,
) -> LearnerMemory:
    """Peak bytes per GPU of a learner step, following what ``agents.training.rllib`` allocates:

    - ``ddp``: weights, gradients and AdamW's two moments all in ``dtype`` (pure bf16 halves them), replicated;
      the KL reference is a frozen copy in ``dtype``; with ``world_size > 1`` DDP's gradient buckets add one
      more copy of the gradients.
    - ``lora``: frozen weights in ``dtype``, gradients and moments of the adapters only; the reference is the
      same weights with the adapters disabled, so it costs nothing.
    - ``fsdp``: float32 master weights, float32 gradients and moments sharded over ``world_size``; the
      reference is a sharded copy in ``dtype``; each forward/backward also holds the gathered ``dtype``
      copies of the embeddings (the root unit) and of two decoder layers (one in use, one prefetched).

    Activations: what autograd keeps per token per layer (about 10 hidden-sized and 4 intermediate-sized
    tensors in ``dtype``, plus RMSNorm's float32 inputs when ``dtype`` is narrower), or only each layer's input
    with gradient checkpointing plus one layer recomputed; and the float32 logits of the ``loss_tokens``
    (default: half of the micro-batch's tokens) with their softmax and gradient. The optimizer's step needs
    about one more gradient-sized buffer, after the activations are freed, so the larger of the two counts.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    b, params = DTYPE_BYTES[dtype], shape.parameters()
    if strategy == "ddp":
        weights, gradients, optimizer = params * b, params * b, 2 * params * b
        gradients += params * b if world_size > 1 else 0
        reference = params * b if kl_reference else 0
        step_buffer = params * b
    elif strategy == "lora":
        adapters = shape.lora_parameters(lora_rank)
        weights, gradients, optimizer = params * b + adapters * b, adapters * b, 2 * adapters * b
        reference, step_buffer = 0, adapters * b
    else:
        gathered = (shape.embedding_parameters() + 2 * shape.layer_parameters()) * b
        weights, gradients, optimizer = (
            4 * params // world_size + gathered,
            4 * params // world_size,
            8 * params // world_size,
        )
        reference = params * b // world_size if kl_reference else 0
        step_buffer = 4 * params // world_size
    tokens = micro_batch_size * sequence_length
    loss_tokens = tokens // 2 if loss_tokens is None else loss_tokens
    h, i = shape.hidden_size, shape.intermediate_size
    per_layer_token = b * (10 * h + 4 * i) + (2 * 4 * h if b < 4 else 0)
    if gradient_checkpointing:
        layers = tokens * (shape.num_hidden_layers * b * h + per_layer_token)
    else:
        layers = tokens * shape.num_hidden_layers * per_layer_token
    logits = loss_tokens * shape.vocab_size * (b + 3 * 4)  # dtype logits; float32 copy, softmax, gradient
    activations = max(layers + logits, step_buffer)
    return LearnerMemory(weights, gradients, optimizer, reference, activations)


def largest_trainable(
    gpu_gib: float,
    num_gpus: int,
    *,
    strategy: str,
    dtype: str = "bfloat16",
    gradient_checkpointing: bool = True,
    usable: float = 0.9,
    **kwargs: object,
) -> str | None:
    """The largest Qwen2.5 shape whose learner fits ``usable`` of ``gpu_gib`` per GPU with ``strategy`` over
    ``num_gpus`` (the rest goes to the CUDA context, NCCL's buffers and the allocator's fragmentation; DDP and
    LoRA replicate the model, so more GPUs do not make a larger one fit); None if none does."""
    world = num_gpus
    fitting = [
        name
        for name, shape in QWEN25_SHAPES.items()
        if learner_memory(
            shape,
            strategy=strategy,
            world_size=world,
            dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
            **kwargs,
        ).total
        <= usable * gpu_gib * GIB
    ]
    return fitting[-1] if fitting else None
