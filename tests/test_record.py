import json
import math

import pytest

from bench.record import RunRecord, read_record, redact, write_json_atomic


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


def _start(run_dir, **kw):
    fields = dict(
        fingerprint="f00d",
        name="r",
        loss="ce",
        data="synthetic",
        eval_data="synthetic",
        model="tiny",
        seed=0,
        config={"seed": 0},
        commit=None,
    )
    return RunRecord.start(run_dir, **{**fields, **kw})


def test_a_record_is_written_running_then_completed(tmp_path):
    record = _start(tmp_path)
    running = read_record(tmp_path)
    assert running["status"] == "running" and running["metrics"] is None and running["timings"] == {}
    assert (running["fingerprint"], running["eval_data"], running["run_dir"]) == (
        "f00d",
        "synthetic",
        str(tmp_path),
    )
    blocks = [{"mean": {"dsc": 0.5, "hd95": math.nan}}, {"mean": {"dsc": 0.4}}]
    record.complete(blocks, {"train": [], "eval": []}, train_s=2.0, eval_s=1.0, steps=8)
    done = read_record(tmp_path)
    assert done["status"] == record.status == "completed"
    assert done["metrics"] == {"mean": {"dsc": 0.5, "hd95": None}}
    assert done["more_metrics"] == [{"mean": {"dsc": 0.4}}]
    assert {k: v for k, v in done["timings"].items() if k != "total_s"} == {
        "train_s": 2.0,
        "eval_s": 1.0,
        "steps": 8,
    }
    assert done["created"] == running["created"] and "error" not in done
    with pytest.raises(RuntimeError, match="a completed run cannot become failed"):
        record.fail(ValueError("late"))
    assert read_record(tmp_path) == done  # an ended record is never rewritten


def test_a_single_protocol_writes_no_more_metrics(tmp_path):
    record = _start(tmp_path)
    record.complete([{"mean": {"dsc": 0.5}}], {}, train_s=1.0, eval_s=1.0, steps=1)
    assert "more_metrics" not in read_record(tmp_path)


def test_a_failure_is_recorded_with_its_error_traceback_and_step(tmp_path):
    record = _start(tmp_path)
    try:
        raise ValueError("bad value")
    except ValueError as e:
        record.fail(e, failed_step=3)
    rec = read_record(tmp_path)
    assert (rec["status"], rec["error"], rec["failed_step"]) == ("failed", "ValueError: bad value", 3)
    assert rec["traceback"].startswith("Traceback") and 'raise ValueError("bad value")' in rec["traceback"]
    assert list(rec["timings"]) == ["total_s"] and rec["metrics"] is None and rec["history"] is None
    (tmp_path / "x").mkdir()
    _start(tmp_path / "x").fail(RuntimeError("no step"))
    assert "failed_step" not in read_record(tmp_path / "x")


def test_an_interruption_is_recorded_resumable_and_keeps_the_creation_time(tmp_path):
    first = _start(tmp_path)
    first.interrupt("interrupted by signal SIGTERM at step 4; resumable")
    rec = read_record(tmp_path)
    assert (rec["status"], rec["error"]) == (
        "interrupted",
        "interrupted by signal SIGTERM at step 4; resumable",
    )
    resumed = _start(tmp_path, previous={**rec, "created": "2020-01-01T00:00:00+00:00"})
    assert resumed.created == "2020-01-01T00:00:00+00:00" == read_record(tmp_path)["created"]
    assert read_record(tmp_path)["status"] == "running"


def test_a_record_of_another_rank_is_never_written(tmp_path):
    record = _start(tmp_path, write=False)
    record.complete([{"mean": {}}], {}, train_s=1.0, eval_s=1.0, steps=1)
    assert record.status == "completed" and not list(tmp_path.iterdir())
