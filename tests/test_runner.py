"""A short CPU run end to end, in process: training lowers the loss, the record is complete; the
parts of a run are built alone; a completed run is skipped, and ``force`` moves it aside."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY, make_cfg
from omegaconf import OmegaConf

import bench.run
from bench.logger import NullLogger
from bench.record import RECORD
from bench.run import RunRefused, build, run

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


def strict_json(text: str):
    """``text`` parsed as strict JSON: NaN, Infinity and -Infinity (which ``json`` accepts) fail."""

    def refuse(constant):
        raise ValueError(f"{constant} in the record: not strict JSON")

    return json.loads(text, parse_constant=refuse)


#: the keys of a completed record, in order, as written before the runner was built from parts
COMPLETED_KEYS = [
    "status",
    "fingerprint",
    "name",
    "loss",
    "data",
    "model",
    "seed",
    "config",
    "metrics",
    "history",
    "timings",
    "versions",
    "commit",
    "created",
    "updated",
    "run_dir",
    "eval_data",
]


def test_record_is_complete_and_on_disk(finished):
    _, run_dir, record = finished
    on_disk = strict_json((run_dir / RECORD).read_text())
    assert on_disk == record
    assert list(on_disk) == COMPLETED_KEYS
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
    timings = on_disk["timings"]
    assert list(timings) == ["train_s", "eval_s", "total_s", "steps"] and timings["steps"] == 40
    assert 0 < timings["train_s"] < timings["total_s"] and 0 < timings["eval_s"] < timings["total_s"]
    assert "torch" in on_disk["versions"]
    assert on_disk["commit"] is None or isinstance(on_disk["commit"], str)
    assert [e["step"] for e in on_disk["history"]["eval"]] == [20]


def test_resumable_state_is_saved(finished):
    _, run_dir, _ = finished
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 40
    assert set(state) >= {"model", "optimizer", "scheduler", "loss", "rng", "history", "best"}
    assert (run_dir / "checkpoints" / "best.pt").exists()


def test_completed_run_is_skipped_unless_forced(finished, capsys, monkeypatch, tmp_path):
    cfg, run_dir, _ = finished
    before = (run_dir / RECORD).read_bytes()
    last = run_dir / "checkpoints" / "last.pt"
    stamp = last.stat().st_mtime_ns

    def nothing_is_built(*args, **kwargs):
        raise AssertionError("a completed run was built again")

    monkeypatch.setattr(bench.run, "build", nothing_is_built)
    again = run(cfg, run_dir, "r")
    assert "already completed" in capsys.readouterr().out
    assert again == json.loads(before) and again["status"] == "completed"
    assert (run_dir / RECORD).read_bytes() == before and last.stat().st_mtime_ns == stamp

    # force=true: the old run is moved aside, intact, and the run starts from scratch
    copy = Path(shutil.copytree(run_dir, tmp_path / "r"))

    def built_afresh(*args, **kwargs):
        assert not (copy / RECORD).exists() or json.loads((copy / RECORD).read_text())["status"] == "running"
        assert not (copy / "checkpoints").exists()
        raise RuntimeError("built from scratch")

    monkeypatch.setattr(bench.run, "build", built_afresh)
    forced = OmegaConf.merge(cfg, {"force": True})
    with pytest.raises(RuntimeError, match="built from scratch"):
        run(forced, copy, "r")
    (moved,) = (copy / "superseded").iterdir()
    assert (moved / "record.superseded.json").read_bytes() == before
    assert (moved / "checkpoints" / "last.pt").read_bytes() == last.read_bytes()
    new = json.loads((copy / RECORD).read_text())
    assert new["status"] == "failed" and new["error"] == "RuntimeError: built from scratch"


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


def test_non_finite_numbers_are_stored_as_null_in_strict_json(tmp_path, data_root, monkeypatch):
    real = bench.run.evaluate

    def with_nan(*args, **kwargs):  # e.g. HD95 of a case with an empty prediction
        blocks = real(*args, **kwargs)
        blocks[0]["mean"]["hd95"] = math.nan
        blocks[0]["per_case"][0]["assd"] = math.inf
        return blocks

    monkeypatch.setattr(bench.run, "evaluate", with_nan)
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, "trainer.max_steps=2"],
        data_root=data_root,
        output_dir=tmp_path,
    )
    run(cfg, tmp_path / "n", "n")
    on_disk = strict_json((tmp_path / "n" / RECORD).read_text())
    assert on_disk["metrics"]["mean"]["hd95"] is None and on_disk["metrics"]["per_case"][0]["assd"] is None
    assert on_disk["metrics"]["mean"]["dsc"] is not None


def test_the_parts_of_a_run_are_built_alone(tmp_path, data_root):
    overrides = ["+experiment=demo", "+loss=dice", *TINY[:5], "data.protocol=[default,transunet]"]
    cfg = make_cfg(overrides, data_root=data_root, output_dir=tmp_path)
    parts = build(cfg)
    assert (parts.trainer.max_steps, parts.trainer.optimizer.lr, parts.trainer.device) == (600, 3e-3, "cpu")
    assert parts.device == torch.device("cpu") and isinstance(parts.logger, NullLogger)
    assert type(parts.loss).__name__ == "DiceLoss" and parts.loss_name == "dice"
    assert len(parts.train_set) == 2 * 6  # slices of the 2 training cases
    assert sorted({parts.test_set[i]["case"] for i in range(len(parts.test_set))}) == ["case0003", "case0004"]
    organs = ("aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach")
    assert parts.test_set.class_names == ("background", *organs)
    assert parts.evaluation.protocols == ["default", "transunet"]
    assert parts.evaluation.eval_classes == list(range(1, 9)) and parts.evaluation.batch_size == 24
    assert parts.evaluation.metric_kwargs["nsd_tolerance"] == dict.fromkeys(range(9), 1.0)
    # seeded before the model is made: the same config builds the same weights
    again = build(cfg).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in parts.model.state_dict().items())
    logits = parts.model(torch.zeros(1, 1, 32, 32))["logits"]
    assert logits.shape == (1, 9, 32, 32)
    assert not any(tmp_path.iterdir())  # nothing written: no run directory, record or checkpoint


class _Recorder(NullLogger):
    """A logger that keeps what the run sends at the end."""

    def finish(self, metrics, more=()):
        self.sent = (metrics, list(more))


def test_every_protocol_reaches_the_logger_and_subsets_are_the_training_sets(
    tmp_path, data_root, monkeypatch
):
    recorder = _Recorder()
    monkeypatch.setattr(bench.run, "make_logger", lambda *a, **k: recorder)
    real_build = bench.run.build

    def build_with_subsets(*args, **kwargs):  # the training set (only) names a class subset
        parts = real_build(*args, **kwargs)
        parts.train_set.eval_subsets = {"FirstTwo": [1, 2]}
        assert not getattr(parts.test_set, "eval_subsets", {})
        return parts

    monkeypatch.setattr(bench.run, "build", build_with_subsets)
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, "trainer.max_steps=2", "data.protocol=[default,transunet]"],
        data_root=data_root,
        output_dir=tmp_path,
    )
    record = run(cfg, tmp_path / "p", "p")
    first, more = recorder.sent
    assert first["protocol"] == "default" and first["mean"]["dsc"] == record["metrics"]["mean"]["dsc"]
    assert [m["protocol"] for m in more] == ["transunet"]
    assert more[0]["mean"] == record["more_metrics"][0]["mean"]
    for block in (record["metrics"], *record["more_metrics"]):
        names = list(block["per_class"])[:2]
        sub = block["subsets"]["firsttwo"]
        assert sub["classes"] == names
        assert sub["dsc"] == pytest.approx(sum(block["per_class"][n]["dsc"] for n in names) / 2)
