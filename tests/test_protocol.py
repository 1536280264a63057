"""SPEC §1 and the format/answer rules of §2, as executable statements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from research_env import protocol as p

EOS = "<|endoftext|>"
TAGS = ["<think>", "</think>", "<search>", "</search>", "<result>", "</result>", "<answer>", "</answer>"]
tag_free = st.text().filter(lambda s: not any(t in s for t in TAGS))


def test_stop_strings_are_the_search_close_tag():
    assert p.STOP_STRINGS == ("</search>",)


@pytest.mark.parametrize(
    "chunk, kind",
    [
        ("<search> q </search>", p.ChunkKind.SEARCH),
        ("<search> q </search>\n", p.ChunkKind.SEARCH),  # a BPE token may carry white space past the stop
        ("<answer>\\boxed{x}</answer>" + EOS, p.ChunkKind.END),
        ("<search> q </search>" + EOS, p.ChunkKind.END),  # a response the model ended is scored
        ("<think> half a thou", p.ChunkKind.CONTINUE),
        ("</search> more text", p.ChunkKind.CONTINUE),  # only how the chunk ends matters
        ("", p.ChunkKind.CONTINUE),
    ],
)
def test_how_a_chunk_ends_decides_what_happens(chunk, kind):
    assert p.classify_chunk(chunk, EOS) is kind


@given(query=tag_free, before=tag_free)
def test_query_round_trips_through_search_tags(query, before):
    assert p.extract_search_query(f"{before}<search>{query}</search>") == query.strip()


def test_query_is_between_the_last_open_and_last_close_tag():
    assert p.extract_search_query("<search> a </search> x <search> b </search>") == "b"
    assert p.extract_search_query("<search> a <search> b </search>") == "b"


@pytest.mark.parametrize("text", ["no tags at all", "q </search>", "</search> <search> q"])
def test_malformed_search_call_gives_the_empty_query(text):
    assert p.extract_search_query(text) == ""


def test_result_block_layout_matches_research():
    block = p.format_result(['"A"\nfirst', '"B"\nsecond'])
    assert block == ' <result>\n"A"\nfirst\n\n"B"\nsecond\n</result>'


def test_no_documents_is_never_a_silent_empty_result():
    assert p.format_result([]) == f" <result>\n{p.NO_RESULTS_NOTICE}\n</result>"


GOOD = "<think> r </think><search> q </search><result> d </result><think> s </think><answer> \\boxed{x} </answer>"


@pytest.mark.parametrize(
    "response, ok, reason",
    [
        (GOOD, True, "format is correct"),
        ("<think> r </think><answer> \\boxed{x} </answer>", True, "format is correct"),
        ("<think> r <answer> \\boxed{x} </answer>", False, "not paired"),
        ("<answer> \\boxed{x} </answer>", False, "no <think>"),
        ("<think>r</think><answer>\\boxed{x}</answer><answer>\\boxed{y}</answer>", False, "exactly one"),
        ("<think>r</think>", False, "exactly one"),
        ("<think>r</think><search> q </search><answer>\\boxed{x}</answer>", False, "not followed"),
        ("<think>r</think><search> q <result> d </search></result><answer>\\boxed{x}</answer>", False, "out of order"),
        ("<think>r</think></answer> \\boxed{x} <answer>", False, "before <answer>"),
        ("<think>r</think><answer> x </answer>", False, "\\boxed"),
    ],
)
def test_format_gate(response, ok, reason):
    verdict = p.check_format(response)
    assert verdict.ok is ok
    assert reason in verdict.reason


@pytest.mark.parametrize(
    "text, boxed",
    [
        ("\\boxed{Paris}", "Paris"),
        ("\\boxed{a} then \\boxed{b}", "b"),
        ("\\boxed{\\text{New {York}}}", "\\text{New {York}}"),
        ("\\fbox{x}", "x"),
        ("\\boxed 42$ rest", "42"),
        ("\\boxed{}", ""),
        ("\\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, boxed):
    assert p.last_boxed(text) == boxed


def test_answer_is_the_last_box_of_the_first_answer_span():
    response = "<answer> \\boxed{a} or \\boxed{b} </answer> <answer> \\boxed{c} </answer>"
    assert p.extract_answer(response) == "b"
    assert p.extract_answer("\\boxed{outside}") is None


@given(st.text())
def test_protocol_functions_are_total(text):
    p.classify_chunk(text, EOS)
    p.extract_search_query(text)
    p.check_format(text)
    p.extract_answer(text)
