"""staged_directory: a directory appears whole or not at all, and no staging copy is left behind."""

from __future__ import annotations

import pytest

from research_env.staging import staged_directory


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
