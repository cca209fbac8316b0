"""Bad input is found before training (issue 11): the config check, the data pre-flight and the
per-file reading checks, no orphan worker processes, clear checkpoint write errors."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, bench_cli, make_cfg, records
from omegaconf import OmegaConf

import datasets
from bench.config_check import TRAINER, check_config, output_problem
from bench.run import run
from bench.train import CheckpointWriteError, load_checkpoint, save_checkpoint
from bench.trainer_config import keys as trainer_keys
from datasets.synthetic import write_synthetic_synapse


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cfg")
    cfg = make_cfg(["+loss=ce", "+data=synthetic", "logger=wandb"], data_root=tmp, output_dir=tmp)
    return OmegaConf.to_container(cfg, resolve=True)


def _with(base: dict, **values) -> dict:
    cfg = copy.deepcopy(base)
    for dotted, value in values.items():
        *path, last = dotted.split("__")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def test_the_shipped_config_is_valid(base):
    assert check_config(base) == []


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("trainer__max_steps", "abc", "trainer.max_steps='abc': expected an integer >= 1"),
        ("trainer__max_steps", 0, "trainer.max_steps=0: expected an integer >= 1"),
        ("trainer__max_steps", -3, "trainer.max_steps=-3: expected an integer >= 1"),
        ("trainer__max_steps", True, "trainer.max_steps=True: expected an integer >= 1"),
        ("data__batch_size", "abc", "data.batch_size='abc': expected an integer >= 1"),
        ("seed", "abc", "seed='abc': expected an integer >= 0"),
        ("trainer__optimizer__lr", "abc", "trainer.optimizer.lr='abc': expected a number > 0"),
        ("trainer__optimizer__lr", 0.0, "trainer.optimizer.lr=0.0: expected a number > 0"),
        ("trainer__optimizer__lr", float("nan"), "trainer.optimizer.lr=nan: expected a number > 0"),
        ("trainer__optimizer__name", "adam", "trainer.optimizer.name='adam': expected one of: adamw, sgd"),
        ("trainer__scheduler__name", "cosine", "trainer.scheduler.name='cosine': expected one of: poly"),
        ("trainer__monitor", "dscc", "trainer.monitor='dscc': expected one of: dsc, iou"),
        ("trainer__device", "gpu", "trainer.device='gpu': expected auto, cpu, cuda or cuda:N"),
        ("trainer__eval_workers", -1, "trainer.eval_workers=-1: expected auto or an integer >= 0"),
        ("trainer__grad_clip", -1.0, "trainer.grad_clip=-1.0: expected null or a number > 0"),
        ("trainer__amp", "yes", "trainer.amp='yes': expected true or false"),
        ("data__generator__size", 0, "data.generator.size=0: expected an integer >= 16"),
        ("data__protocol", "defualt", "data.protocol='defualt': expected one of: default, transunet"),
        ("data__protocol", ["default", "tu"], "data.protocol=['default', 'tu']: expected one of"),
        ("data__protocol", [], "data.protocol=[]: expected one of"),
        ("data__name", "synapes", "data.name='synapes': expected one of: "),
        ("data__eval_classes", [1, 9], "data.eval_classes=[1, 9]: expected null or a non-empty list"),
        ("data__num_workers", -1, "data.num_workers=-1: expected an integer >= 0"),
        ("data__test__img_size", "big", "data.test.img_size='big': expected an integer >= 16"),
        ("data__test__split", "tset", "data.test.split='tset': expected one of: train, test"),
        ("model__arch", "unett", "model.arch='unett': expected one of: deeplabv3, "),
        ("model__encoder_name", "resnet", "model.encoder_name='resnet': expected one of: "),
        ("loss__name", "cee", "loss.name='cee': expected one of: "),
        ("logger__name", "tensorboard", "logger.name='tensorboard': expected one of: none, wandb"),
        ("logger__init_timeout", 0, "logger.init_timeout=0: expected a number > 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_valid(base, key, value, expected):
    (error,) = check_config(_with(base, **{key: value}))
    assert error.startswith(expected)
    assert "\n" not in error


def test_every_error_is_reported_at_once_and_missing_keys_are_named(base):
    cfg = _with(base, trainer__max_steps=0, trainer__monitor="x", data__num_classes="9")
    del cfg["trainer"]["optimizer"]["lr"]
    errors = check_config(cfg)
    assert [e.split("=")[0].split(" ")[0] for e in errors] == [
        "trainer.max_steps",
        "trainer.optimizer.lr",
        "trainer.monitor",
        "data.num_classes",
    ]
    assert errors[1] == "trainer.optimizer.lr is missing; expected a number > 0"


def test_an_unknown_trainer_key_is_refused_by_name_and_every_key_is_checked(base):
    assert set(TRAINER) == set(trainer_keys())  # a rule for each key of the typed trainer config
    cfg = _with(base, trainer__max_step=3, trainer__optimizer__betas=[0.9, 0.99])
    assert check_config(cfg) == [
        "trainer.max_step=3: unknown key; remove it or use one of: device, max_steps, batch_size, "
        "optimizer, scheduler, amp, channels_last, compile, grad_clip, log_every, eval_every, ckpt_every, "
        "monitor, deterministic, progress_bar, eval_workers",
        "trainer.optimizer.betas=[0.9, 0.99]: unknown key; remove it or use one of: "
        "name, lr, weight_decay, momentum, loss_lr",
    ]
    del cfg["trainer"]["max_step"], cfg["trainer"]["optimizer"]["betas"], cfg["trainer"]["amp"]
    assert check_config(cfg) == ["trainer.amp is missing; expected true or false"]  # no fallback in the code


def test_an_interpolated_value_names_where_it_comes_from(tmp_path):
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", "data.generator.size=0"], data_root=tmp_path, output_dir=tmp_path
    )
    assert check_config(cfg) == [
        "data.generator.size=0: expected an integer >= 16",
        "data.train.img_size=0 (from ${data.generator.size}): expected an integer >= 16",
        "data.test.img_size=0 (from ${data.generator.size}): expected an integer >= 16",
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        ["+data=synapse"],
        ["+data=cityscapes", "data.resize=[512,512]"],
        ["+experiment=paper_synapse"],
        ["+experiment=synthia_to_cityscapes"],  # data.test_dataset resolves (it did not: data.resize)
        ["+experiment=authors_repo_cityscapes"],
    ],
)
def test_shipped_recipes_pass_the_check(tmp_path, overrides):
    cfg = make_cfg(["+loss=dice", *overrides], data_root=tmp_path, output_dir=tmp_path)
    assert check_config(cfg) == []


@pytest.mark.slow
def test_cli_prints_one_line_per_error_exits_2_and_writes_nothing(tmp_path):
    res = bench_cli(
        "+loss=ce",
        "+data=synthetic",
        "trainer.max_steps=abc",
        "trainer.optimizer.lr=abc",
        "data.protocol=defualt",
        tmp=tmp_path,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("config error: ")]
    assert [ln.split("=")[0] for ln in lines] == [
        "config error: trainer.max_steps",
        "config error: trainer.optimizer.lr",
        "config error: data.protocol",
    ]
    assert records(tmp_path / "out") == {}
    assert not (tmp_path / "data").exists()  # not even the synthetic data was generated


# -- data: the pre-flight and the per-file reading checks ----------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synapse") / "data"
    return write_synthetic_synapse(root, train_cases=1, test_cases=2, depth=3, size=16)


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "Synapse"))


def _build(root: Path, split: str, **kw):
    return datasets.create_dataset("synapse", root=root, split=split, img_size=32, **kw)


def test_pristine_data_pass_the_preflight(root):
    test = _build(root, "test")
    test.preflight()
    assert test.spacing("case0002") == pytest.approx(
        json.loads((root / "spacing.json").read_text())["case0002"]
    )
    assert _build(root, "train")[0]["label"].shape == (32, 32)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _drop_label(path: Path) -> None:
    np.savez(path, image=np.zeros((16, 16), np.float32))


def _rgb_label(path: Path) -> None:
    np.savez(path, image=np.zeros((16, 16), np.float32), label=np.zeros((16, 16, 3), np.uint8))


def _other_size(path: Path) -> None:
    np.savez(path, image=np.zeros((16, 16), np.float32), label=np.zeros((20, 20), np.uint8))


@pytest.mark.parametrize(
    "damage, error",
    [
        (_truncate, r"cannot read slice .*case0001_slice001\.npz \(BadZipFile: .*prepare_synapse"),
        (_drop_label, r"cannot read slice .*case0001_slice001\.npz \(KeyError: .*'label'"),
        (_rgb_label, r"case0001_slice001\.npz: image \(16, 16\) and label \(16, 16, 3\) .*never resized"),
        (_other_size, r"case0001_slice001\.npz: image \(16, 16\) and label \(20, 20\) .*never resized"),
    ],
)
def test_a_bad_slice_fails_the_preflight_and_its_reading_naming_the_file(root, damage, error):
    damage(root / "train_npz" / "case0001_slice001.npz")
    train = _build(root, "train")
    with pytest.raises((OSError, ValueError), match=error):
        train.preflight()
    with pytest.raises((OSError, ValueError), match=error):
        train[1]  # read anyway (e.g. the file changed after the pre-flight): same error, never a resize
    train[0]


def test_a_test_volume_without_label_names_the_file(root):
    path = root / "test_vol_h5" / "case0003.npy.h5"
    with h5py.File(path, "a") as h5:
        del h5["label"]
    with pytest.raises(KeyError, match=r"case0003\.npy\.h5: no dataset 'label'.*prepare_synapse"):
        _build(root, "test")


@pytest.mark.parametrize(
    "spacing, error",
    [
        ("{not json", r"spacing\.json is not readable JSON"),
        ({"case0001": [3, 1, 1], "case0002": [3, 1, 1]}, r"no entry for the test case\(s\) case0003"),
        ({"case0002": [1.0, 1.0], "case0003": [3, 1, 1]}, r"case0002=\[1\.0, 1\.0\] is not three positive"),
        ({"case0002": [0, 1, 1], "case0003": [3, 1, 1]}, r"case0002=\[0, 1, 1\] is not three positive"),
        ({"case0002": "3,1,1", "case0003": [3, 1, 1]}, r"case0002='3,1,1' is not three positive"),
        ([[3, 1, 1]], r"must map case names"),
    ],
)
def test_a_bad_spacing_sidecar_is_found_when_the_test_split_is_built(root, spacing, error):
    text = spacing if isinstance(spacing, str) else json.dumps(spacing)
    (root / "spacing.json").write_text(text)
    with pytest.raises(ValueError, match=error) as info:
        _build(root, "test")
    assert str(root / "spacing.json") in str(info.value) and "prepare_synapse" in str(info.value)


def test_test_labels_out_of_range_fail_the_preflight(root):
    with h5py.File(root / "test_vol_h5" / "case0003.npy.h5", "a") as h5:
        h5["label"][1, 2, 3] = 12
    test = _build(root, "test")
    with pytest.raises(ValueError, match=r"case0003\.npy\.h5: label values \[12\] are outside the 9 classes"):
        test.preflight()


def test_fractional_test_labels_fail_the_preflight(root):
    with h5py.File(root / "test_vol_h5" / "case0002.npy.h5", "a") as h5:
        label = h5["label"][()].astype(np.float32)
        label[0, 0, 0] = 1.5  # e.g. a label resampled with linear interpolation
        del h5["label"]
        h5["label"] = label
    with pytest.raises(ValueError, match=r"case0002\.npy\.h5: label holds non-integer values"):
        _build(root, "test").preflight()


def test_synthetic_generator_sizes_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"data.generator.size=0: expected an integer >= 16"):
        write_synthetic_synapse(tmp_path / "s", size=0)


def _label_out_of_range(root: Path) -> None:
    with h5py.File(root / "test_vol_h5" / "case0004.npy.h5", "a") as h5:
        h5["label"][0, 0, 0] = 9


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, error",
    [
        (_label_out_of_range, r"case0004\.npy\.h5: label values \[9\]"),
        (lambda root: _truncate(root / "train_npz" / "case0002_slice003.npz"), r"case0002_slice003\.npz"),
    ],
)
def test_bad_data_fail_the_run_before_the_first_step(tmp_path, damage, error):
    cfg = make_cfg(["+loss=ce", "+data=synthetic", *TINY], data_root=tmp_path / "data", output_dir=tmp_path)
    root = Path(cfg.data.root)
    write_synthetic_synapse(root, **OmegaConf.to_container(cfg.data.generator))
    damage(root)
    with pytest.raises((OSError, ValueError), match=error):
        run(cfg, tmp_path / "run", "bad-data")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "failed" and re.search(error, record["error"])
    assert record["history"] is None and not (tmp_path / "run" / "checkpoints").exists()


# -- no orphans: metric and loader workers end with their run, even on kill -9 -------------------

ORPHAN_SCRIPT = """
import os, sys, time


def stuck(*args, **kwargs):  # a per-case metric that never ends (cheap to import in the worker)
    print("worker", os.getpid(), flush=True)
    time.sleep(600)


def main(kind):
    import numpy as np, torch
    from torch.utils.data import DataLoader
    import bench.evaluate as ev
    from datasets.base import SegDataset, worker_init

    class Images(SegDataset):
        class_names = ("a", "b")

        def __len__(self):
            return 2

        def load(self, i):
            if kind == "loader":  # a loader worker busy reading a file
                stuck()
            image, label = np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int64)
            return {"image": image, "label": label, "case": str(i)}

    class Net(torch.nn.Module):
        def forward(self, x):
            return {"logits": torch.zeros(x.shape[0], 2, *x.shape[2:])}

    if kind == "metrics":
        ev.score_case = stuck
        cpu = torch.device("cpu")
        ev.evaluate(Net(), Images("test"), protocols=["default"], eval_classes=None, device=cpu,
                    batch_size=1, amp=False, channels_last=False, workers=1)
    else:
        next(iter(DataLoader(Images("test"), batch_size=1, num_workers=1, worker_init_fn=worker_init)))


if __name__ == "__main__":
    main(sys.argv[1])
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (its new parent may not reap it)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "workers, signum",
    [("metrics", signal.SIGKILL), ("loader", signal.SIGTERM)],
)
def test_workers_exit_when_the_run_is_killed(tmp_path, workers, signum):
    script = tmp_path / "victim.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), workers], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("worker "), "the script ended before its worker started"
        pids = [int(line.split()[1])]
        assert _alive(pids[0])
    finally:
        proc.send_signal(signum)  # the parent dies without shutting its pools down
        proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert left == []


# -- checkpoints: a full disk or a read-only folder keeps the previous checkpoint -----------------


@pytest.fixture
def previous(tmp_path) -> Path:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    return path


def _intact(path: Path) -> None:
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_names_the_path_and_free_space_and_keeps_the_checkpoint(previous, monkeypatch):
    real = os.fdopen

    def full(fd, mode):  # the temp file is replaced by /dev/full: every write fails with ENOSPC
        os.close(fd)
        return real(os.open("/dev/full", os.O_WRONLY), mode)

    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*last\.pt .*GiB free in ") as e:
        save_checkpoint(previous, {"step": 2, "w": torch.zeros(100_000)})
    assert "No space left on device" in str(e.value) or "unexpected pos" in str(e.value)
    monkeypatch.undo()
    _intact(previous)


def test_torchs_disk_full_error_is_reported_the_same_way(previous, monkeypatch):
    def full(state, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError, match=r"last\.pt \(RuntimeError: .*unexpected pos.*GiB free"):
        save_checkpoint(previous, {"step": 2})
    monkeypatch.undo()
    _intact(previous)


def test_a_read_only_folder_names_the_path(previous, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(previous.parent))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointWriteError, match=r"last\.pt \(OSError: .*Read-only file system.*free in"):
        save_checkpoint(previous, {"step": 2})
    monkeypatch.undo()
    _intact(previous)


# -- the output folder: read-only or full is one line before Hydra writes anything ----------------


def test_a_read_only_output_folder_names_the_path_and_free_space(tmp_path, monkeypatch):
    assert output_problem(tmp_path / "out") is None
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    problem = output_problem(tmp_path / "out" / "sweep")
    assert problem.startswith(f"{tmp_path / 'out' / 'sweep'} is not writable ({tmp_path} is read-only")
    assert "GiB free in " in problem


def test_a_full_output_disk_names_the_path_and_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    assert output_problem(tmp_path) == f"{tmp_path}: the disk is full (0.00 GiB free in {tmp_path})"


@pytest.mark.slow
def test_cli_with_an_unusable_output_folder_exits_2_with_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"  # below a file: no folder can be made there
    res = bench_cli("+loss=ce", "+data=synthetic", env={"SEGLOSS_OUTPUT": str(out)}, tmp=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("output error: ")]
    assert f"paths.output_dir: {tmp_path / 'file' / 'out'} is not writable" in line and "GiB free" in line
