"""Folders written whole or not at all; replacing an existing one keeps it until the new one is done."""

from __future__ import annotations

import pytest

from LDCTDenoiseLib.atomic import atomic_folder


def test_replace_swaps_in_the_new_folder_and_leaves_no_leftovers(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_folder(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old report stays readable while the new one is written
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_failure_keeps_the_old_folder_as_it_was(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("cancelled")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_without_replace_a_non_empty_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OSError), atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
