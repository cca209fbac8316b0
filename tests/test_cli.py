"""The command line as users type it (subprocesses of `python -m bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY, bench_cli, records

pytestmark = pytest.mark.slow


def bench(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return bench_cli(*args, tmp=tmp)


def test_no_loss_or_data_lists_the_choices_and_fails(tmp_path):
    res = bench(tmp=tmp_path)
    assert res.returncode == 2
    assert "missing: +loss=..., +data=..." in res.stderr
    assert "focal" in res.stderr and "synthetic" in res.stderr and "unet_r34" in res.stderr


def test_plain_group_override_explains_the_plus(monkeypatch, capsys):
    from bench.__main__ import cli

    monkeypatch.setattr(sys, "argv", ["bench", "loss=focal", "+data=synthetic"])
    with pytest.raises(SystemExit) as exit_:
        cli()  # before Hydra: the same as `python -m bench loss=focal +data=synthetic`
    assert exit_.value.code == 2
    assert "write `+loss=focal`" in capsys.readouterr().err


def test_data_override_of_a_recipe_is_allowed():
    from bench.__main__ import check_argv

    assert check_argv(["+experiment=paper_synapse", "data=synthetic"]) is None
    assert "write `+data=synthetic`" in check_argv(["+loss=ce", "data=synthetic"])


def test_single_run_writes_a_completed_record(tmp_path):
    res = bench("+loss=focal", "+data=synthetic", *TINY, tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (name, rec), *_ = records(tmp_path / "out" / "default").items()
    assert name.startswith("data=synthetic,loss=focal,")
    assert rec["status"] == "completed" and rec["loss"] == "focal" and rec["data"] == "synthetic"


def test_multirun_sweeps_losses_and_seeds(tmp_path):
    # a relaunch skipping completed jobs: test_runner (in process) and test_sweeps (a sweep with a failure)
    args = ("-m", "+loss=ce,dice", "+data=synthetic", "seed=0,1", *TINY, "trainer.max_steps=2")
    res = bench(*args, tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(tmp_path / "out" / "default")
    assert len(recs) == 4 and {(r["loss"], r["seed"]) for r in recs.values()} == {
        ("ce", 0),
        ("ce", 1),
        ("dice", 0),
        ("dice", 1),
    }
    assert all(r["status"] == "completed" for r in recs.values())
