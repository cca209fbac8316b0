"""Run identity: which keys make a run, the fingerprint, the listed changes, secret masking."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT, TINY, make_cfg
from omegaconf import OmegaConf

from bench.atomic import remove_stale_temps
from bench.identity import NON_IDENTITY, changes, fingerprint, flatten, identity, mask, mask_text
from bench.lock import RunLock, RunLocked


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    cfg = make_cfg(["+loss=ce", "+data=synthetic", *TINY], data_root=tmp / "data", output_dir=tmp / "out")
    return OmegaConf.to_container(cfg, resolve=True)


def edited(config, key, value):
    out = json.loads(json.dumps(config))
    node = out
    *parents, last = key.split(".")
    for k in parents:
        node = node[k]
    node[last] = value
    return out


def test_every_listed_non_identity_key_exists_in_the_config(config):
    keys = flatten(config)
    for entry in NON_IDENTITY:
        if entry != "hydra":
            assert any(k == entry or k.startswith(entry + ".") for k in keys), entry


@pytest.mark.parametrize(
    "key,value",
    [
        ("name", "other"),
        ("tags", ["x"]),
        ("logger.name", "wandb"),
        ("paths.root", "/elsewhere"),
        ("paths.output_dir", "/elsewhere/out"),
        ("resume", False),
        ("force", True),
        ("retry_failed", True),
        ("trainer.progress_bar", True),
        ("trainer.ckpt_every", 7),
        ("trainer.eval_workers", 3),
        ("data.num_workers", 4),
    ],
)
def test_keys_that_cannot_change_the_result_leave_the_fingerprint(config, key, value):
    assert fingerprint(edited(config, key, value)) == fingerprint(config)


@pytest.mark.parametrize(
    "key,value",
    [
        ("seed", 1),
        ("trainer.optimizer.lr", 0.05),
        ("trainer.max_steps", 5),
        ("trainer.scheduler.name", "constant"),
        ("trainer.device", "cuda"),
        ("model.arch", "fpn"),
        ("data.root", "/a-b"),
        ("paths.data_root", "/a/b"),
        ("data.generator.size", 48),
        ("loss.params.label_smoothing", 0.1),
    ],
)
def test_keys_that_define_the_experiment_change_the_fingerprint(config, key, value):
    assert fingerprint(edited(config, key, value)) != fingerprint(config)


def test_fingerprint_of_a_record_config_equals_the_live_one_and_without_seed_groups_seeds(config):
    stored = json.loads(json.dumps(mask(config)))  # what record.json holds
    assert fingerprint(stored) == fingerprint(config)
    other_seed = edited(config, "seed", 3)
    assert fingerprint(other_seed, without=("seed",)) == fingerprint(config, without=("seed",))
    assert "seed" not in identity(config, (*NON_IDENTITY, "seed")) and "seed" in identity(config)


def test_changes_list_each_changed_key_old_to_new(config):
    new = edited(edited(config, "trainer.optimizer.lr", 0.05), "logger.name", "wandb")
    new["extra"] = 1
    assert changes(config, new) == [
        "extra: (absent) → 1",
        f"trainer.optimizer.lr: {config['trainer']['optimizer']['lr']} → 0.05",
    ]
    assert changes(config, config) == []


def test_secrets_are_masked_in_configs_and_text():
    cfg = {"logger": {"api_key": "abc", "project": "p"}, "x": [{"WANDB_TOKEN": "t"}], "password": None}
    masked = {"logger": {"api_key": "***", "project": "p"}, "x": [{"WANDB_TOKEN": "***"}], "password": None}
    assert mask(cfg) == masked
    text = "- +logger.api_key=sk-1\n  token: 'a b'\n#0 : +loss=ce secret_x=[1, 2] seed=0\nmonitor: dsc"
    expected = "- +logger.api_key=***\n  token: ***\n#0 : +loss=ce secret_x=*** seed=0\nmonitor: dsc"
    assert mask_text(text) == expected
    # a secret changes neither the fingerprint nor what the record stores
    assert fingerprint({"a": 1, "token": "x"}) == fingerprint({"a": 1, "token": "y"})


def test_cleanup_removes_only_the_temp_files_of_our_own_writes(tmp_path):
    ours = [tmp_path / ".record.json.abc123.tmp", tmp_path / ".last.pt.x.tmp"]
    theirs = [tmp_path / ".notes.tmp", tmp_path / ".record.json.tmp.keep"]
    theirs.append(tmp_path / "sub" / ".record.json.q.tmp")  # below: not ours to touch
    for p in ours + theirs:
        p.parent.mkdir(exist_ok=True)
        p.write_text("x")
    remove_stale_temps(tmp_path, ("record.json", "last.pt"))
    assert [p.exists() for p in ours] == [False, False]
    assert all(p.exists() for p in theirs)


def test_a_held_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLocked, match=r"in use by pid \d+ on host \S+"):
        RunLock(tmp_path).acquire()
    # a process that dies holding the lock (kill -9) leaves a stale lock: taken over
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from bench.lock import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("held", flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9 and "held" in proc.stdout
    lock = RunLock(tmp_path).acquire()
    try:
        assert lock.stale["pid"] not in (os.getpid(), None)  # the dead holder's record
    finally:
        lock.release()


def test_masked_hydra_files_stay_valid_yaml_and_keep_empty_non_secrets():
    """Hydra's hydra.yaml holds ``exclude_keys: []``: masking it as ``***`` (a YAML alias) broke the
    file for every reader; empty values are no secrets, and masked values are written as YAML."""
    import yaml

    from bench.identity import mask_yaml

    text = (
        "hydra:\n  job:\n    config:\n      override_dirname:\n        exclude_keys: []\n"
        "  overrides:\n    task:\n    - +logger.api_key=abc123\n    - seed=0\n"
        "logger:\n  api_key: abc123\n  token: null\n"
    )
    data = yaml.safe_load(mask_yaml(text))
    assert data["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"] == []
    assert data["hydra"]["overrides"]["task"] == ["+logger.api_key=***", "seed=0"]
    assert data["logger"] == {"api_key": "***", "token": None}
    assert "abc123" not in mask_yaml(text)
    assert mask_yaml("a: 1\n") == "a: 1\n"
