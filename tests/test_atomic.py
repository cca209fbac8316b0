"""One atomic write for records and checkpoints: all or nothing, no temp file left behind."""

from __future__ import annotations

import os

import pytest

from bench.atomic import atomic_write


def test_a_write_replaces_the_file_and_can_keep_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    atomic_write(path, lambda f: f.write(b"one"))
    atomic_write(path, lambda f: f.write(b"two"), keep_previous=True)
    assert path.read_bytes() == b"two"
    assert (tmp_path / "last.pt.prev").read_bytes() == b"one"
    atomic_write(path, lambda f: f.write(b"three"))  # without keep_previous: .prev is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.prev"]
    assert (path.read_bytes(), (tmp_path / "last.pt.prev").read_bytes()) == (b"three", b"one")


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("keep_previous", [False, True])
def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, error, keep_previous):
    path = tmp_path / "record.json"
    path.write_bytes(b"old")

    def fails_midway(f):
        f.write(b"half of the n")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, fails_midway, keep_previous=keep_previous)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_data_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    atomic_write(tmp_path / "x", lambda f: f.write(b"data"))
    assert events == ["fsync", "replace"]
