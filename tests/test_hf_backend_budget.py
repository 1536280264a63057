"""The HF backend's token budget: a call's contexts are split into batches of at most ``max_batch_tokens``
padded tokens (rows x (longest context + largest cap)), longest first, and the chunks come back in input order,
equal to those of an unbudgeted call."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from agents.generation.hf_backend import BatchBudgetWarning, HFBackend, cache_argument

PROMPTS = [
    "Hello",
    "The capital of France is " * 6,
    "Question: who was the father of Edward Baring? Answer:",
    "1, 2, 3,",
    "Where was Marie Curie born? " * 3,
    "A",
]
CAPS = [5, 9, 12, 3, 7, 4]


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    return HFBackend.from_pretrained()


@pytest.fixture(scope="module")
def contexts(backend: HFBackend) -> list[list[int]]:
    return [backend.tokenizer.encode(p) for p in PROMPTS]


def prefill_shapes(backend: HFBackend, contexts: list[list[int]], caps: list[int]) -> tuple[list, list[tuple]]:
    """The chunks of one ``generate`` call and the (rows, width) of each batch's first forward pass, seen by a
    hook on the real model."""
    shapes: list[tuple[int, int]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if kwargs[cache_argument(module)].get_seq_length() == 0:  # a batch's first pass: its whole left-padded contexts
            shapes.append(tuple(kwargs["input_ids"].shape))

    handle = backend.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        chunks = backend.generate(contexts, max_new_tokens=caps)
    finally:
        handle.remove()
    return chunks, shapes


def test_budget_splits_the_batch_and_the_chunks_equal_an_unbudgeted_call_in_order(backend, contexts):
    whole, whole_shapes = prefill_shapes(backend, contexts, CAPS)
    assert whole_shapes == [(len(contexts), max(map(len, contexts)))]  # no budget: one batch, as given
    budget = 2 * (max(map(len, contexts)) + max(CAPS))  # room for about two of the longest rows
    budgeted = HFBackend(backend.model, backend.tokenizer, max_batch_tokens=budget)
    split, shapes = prefill_shapes(budgeted, contexts, CAPS)
    assert len(shapes) >= 3
    assert all(rows * (width + max(CAPS)) <= budget for rows, width in shapes)
    assert [width for _, width in shapes] == sorted((width for _, width in shapes), reverse=True)  # longest first
    assert [c.token_ids for c in split] == [c.token_ids for c in whole]
    assert [c.text for c in split] == [c.text for c in whole]
    assert [c.finish_reason for c in split] == [c.finish_reason for c in whole]
    for ours, theirs in zip(split, whole, strict=True):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)


def test_a_context_over_the_budget_runs_alone_with_a_warning(backend, contexts):
    longest = max(range(len(contexts)), key=lambda i: len(contexts[i]))
    budget = len(contexts[longest]) + CAPS[longest] - 1
    budgeted = HFBackend(backend.model, backend.tokenizer, max_batch_tokens=budget)
    with pytest.warns(BatchBudgetWarning, match="generated alone"):
        split, shapes = prefill_shapes(budgeted, contexts, CAPS)
    assert shapes[0] == (1, len(contexts[longest]))
    whole = backend.generate(contexts, max_new_tokens=CAPS)
    assert [c.token_ids for c in split] == [c.token_ids for c in whole]


def test_no_warning_when_every_context_fits(backend, contexts):
    budgeted = HFBackend(backend.model, backend.tokenizer, max_batch_tokens=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchBudgetWarning)
        budgeted.generate(contexts, max_new_tokens=CAPS)


@given(
    rows=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 64)), max_size=40),
    budget=st.integers(1, 2_000),
    batch_size=st.integers(1, 8),
)
def test_plan_covers_every_context_once_within_the_limits(backend, rows, budget, batch_size):
    lengths, caps = [n for n, _ in rows], [c for _, c in rows]
    planner = HFBackend(backend.model, backend.tokenizer, batch_size=batch_size, max_batch_tokens=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchBudgetWarning)
        batches = planner.plan_batches(lengths, caps)
    assert sorted(i for batch in batches for i in batch) == list(range(len(rows)))
    for batch in batches:
        assert batch == sorted(batch) and 1 <= len(batch) <= batch_size
        cost = len(batch) * (max(lengths[i] for i in batch) + max(caps[i] for i in batch))
        assert cost <= budget or len(batch) == 1


def test_budget_must_be_positive(backend):
    with pytest.raises(ValueError, match="max_batch_tokens"):
        HFBackend(backend.model, backend.tokenizer, max_batch_tokens=0)
