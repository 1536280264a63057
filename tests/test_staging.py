"""staged_directory: a directory appears whole or not at all, and no staging copy is left behind."""

from __future__ import annotations

import pytest

from research_env.staging import staged_directory, write_once


def test_directory_appears_only_when_the_block_completes(tmp_path):
    target = tmp_path / "index"
    with staged_directory(target) as staging:
        (staging / "part").write_text("1")
        assert not target.exists()  # nothing is visible while it is being written
    assert (target / "part").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_a_failed_build_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), staged_directory(target) as staging:
        (staging / "new").write_text("half")
        raise RuntimeError("killed mid-build")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_overwrite_replaces_and_no_overwrite_refuses(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "winner").write_text("w")
    with pytest.raises(OSError), staged_directory(target, overwrite=False) as staging:
        (staging / "loser").write_text("l")
    assert [p.name for p in target.iterdir()] == ["winner"]
    with staged_directory(target) as staging:
        (staging / "fresh").write_text("f")
    assert [p.name for p in target.iterdir()] == ["fresh"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"  # readable by other users of a shared cache
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_write_once_writes_a_missing_cache_forgives_a_lost_race_and_nothing_else(tmp_path):
    target, calls = tmp_path / "tok", []

    def write(staging):
        calls.append(staging)
        (staging / "tokenizer.json").write_text("first")

    assert write_once(target, write, complete="tokenizer.json") == target
    assert write_once(target, write, complete="tokenizer.json") == target and len(calls) == 1  # already complete

    def racer(staging):  # another process moves its complete copy in while this one writes
        (staging / "tokenizer.json").write_text("mine")
        other = tmp_path / "raced"
        other.mkdir()
        (other / "tokenizer.json").write_text("winner")

    raced = tmp_path / "raced"
    assert write_once(raced, racer, complete="tokenizer.json") == raced
    assert (raced / "tokenizer.json").read_text() == "winner"
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "junk").write_text("x")  # a non-empty directory that is not complete is not a lost race
    with pytest.raises(OSError):
        write_once(partial, lambda staging: (staging / "tokenizer.json").write_text("t"), complete="tokenizer.json")
