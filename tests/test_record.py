import json
import math

import pytest

from bench.record import read_record, redact, write_json_atomic


def test_atomic_write_stores_strict_json_with_nan_as_null(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.5, math.inf], "c": (1, 2)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": [1, 2]}
    assert read_record(tmp_path) == {"a": None, "b": [1.5, None], "c": [1, 2]}


def test_failed_write_keeps_the_previous_record_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"status": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": "completed", "bad": object()})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_missing_or_truncated_record_reads_as_none(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / "record.json").write_text('{"status": "runn')
    assert read_record(tmp_path) is None


def test_secrets_are_redacted_from_configs():
    cfg = {"logger": {"api_key": "abc", "project": "p"}, "x": [{"WANDB_TOKEN": "t"}], "password": None}
    assert redact(cfg) == {
        "logger": {"api_key": "***", "project": "p"},
        "x": [{"WANDB_TOKEN": "***"}],
        "password": None,
    }
