"""A short CPU run end to end, in process: training lowers the loss, the record is complete."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TINY, make_cfg

from bench.record import RECORD
from bench.run import RunRefused, run

FINISHED = [
    "+loss=dice",
    "+data=synthetic",
    *TINY,
    "trainer.max_steps=40",
    "trainer.log_every=10",
    "trainer.eval_every=20",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("out")
    cfg = make_cfg(FINISHED, data_root=data_root, output_dir=out)
    run_dir = out / "r"
    record = run(cfg, run_dir, "r")
    return cfg, run_dir, record


def test_training_lowers_the_loss(finished):
    _, _, record = finished
    curve = [h["train/loss"] for h in record["history"]["train"]]
    assert len(curve) == 4 and curve[-1] < curve[0]


def test_record_is_complete_and_on_disk(finished):
    _, run_dir, _ = finished
    on_disk = json.loads((run_dir / RECORD).read_text())
    assert on_disk == json.loads(json.dumps(on_disk))  # strict JSON (no NaN)
    assert on_disk["status"] == "completed"
    assert (on_disk["loss"], on_disk["data"], on_disk["model"], on_disk["seed"]) == (
        "dice",
        "synthetic",
        "tiny",
        0,
    )
    assert on_disk["config"]["trainer"]["max_steps"] == 40
    metrics = on_disk["metrics"]
    assert set(metrics["mean"]) >= {"dsc", "iou", "hd95", "nsd", "assd"} and metrics["units"] == "mm"
    assert list(metrics["per_class"]) == [
        "aorta",
        "gallbladder",
        "left_kidney",
        "right_kidney",
        "liver",
        "pancreas",
        "spleen",
        "stomach",
    ]
    assert {r["case"] for r in metrics["per_case"]} == {"case0003", "case0004"}
    assert len(metrics["per_case"]) == 2 * 8
    assert on_disk["timings"]["steps"] == 40 and on_disk["timings"]["train_s"] > 0
    assert "torch" in on_disk["versions"]
    assert on_disk["commit"] is None or isinstance(on_disk["commit"], str)
    assert [e["step"] for e in on_disk["history"]["eval"]] == [20]


def test_resumable_state_is_saved(finished):
    _, run_dir, _ = finished
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 40
    assert set(state) >= {"model", "optimizer", "scheduler", "loss", "rng", "history", "best"}
    assert (run_dir / "checkpoints" / "best.pt").exists()


def test_completed_run_is_skipped_unless_forced(finished, capsys):
    cfg, run_dir, _ = finished
    again = run(cfg, run_dir, "r")
    assert again == json.loads((run_dir / RECORD).read_text())
    assert "already completed" in capsys.readouterr().out


def test_failure_is_recorded_with_the_error(tmp_path, data_root):
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, "model.arch=nonexistent"],
        data_root=data_root,
        output_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="unknown arch"):
        run(cfg, tmp_path / "bad", "bad")
    rec = json.loads((tmp_path / "bad" / RECORD).read_text())
    assert rec["status"] == "failed" and "unknown arch 'nonexistent'" in rec["error"]


def test_evaluation_on_another_dataset_with_the_same_classes(tmp_path, data_root):
    gen = "{train_cases: 1, test_cases: 1, depth: 4, size: 32, seed: 7}"
    test = f"{{split: test, img_size: 32, generator: {gen}}}"
    other = f"{{name: synthetic, root: {data_root / 'other'}, test: {test}}}"
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, f"+data.test_dataset={other}"],
        data_root=data_root,
        output_dir=tmp_path,
    )
    record = run(cfg, tmp_path / "x", "x")
    assert record["status"] == "completed" and record["eval_data"] == "synthetic"
    assert {r["case"] for r in record["metrics"]["per_case"]} == {"case0002"}  # the other set's test case


def test_another_config_in_the_run_dir_is_refused_and_nothing_is_touched(finished, data_root, tmp_path):
    _, run_dir, _ = finished
    before = (run_dir / RECORD).read_text()
    other = make_cfg([*FINISHED, "trainer.optimizer.lr=0.05"], data_root=data_root, output_dir=tmp_path)
    with pytest.raises(RunRefused, match=r"trainer\.optimizer\.lr: 0\.001 → 0\.05.*force=true"):
        run(other, run_dir, "r")
    assert (run_dir / RECORD).read_text() == before
    assert json.loads(before)["fingerprint"] == torch.load(run_dir / "checkpoints" / "last.pt")["fingerprint"]


def test_a_checkpoint_of_another_config_is_never_loaded(finished, data_root, tmp_path):
    _, run_dir, _ = finished
    orphan = tmp_path / "orphan"  # a checkpoint without its record
    shutil.copytree(run_dir / "checkpoints", orphan / "checkpoints")
    other = make_cfg([*FINISHED, "trainer.max_steps=41"], data_root=data_root, output_dir=tmp_path)
    with pytest.raises(RunRefused, match="checkpoint"):
        run(other, orphan, "orphan")
    assert not (orphan / RECORD).exists()
