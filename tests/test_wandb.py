"""The real W&B client in offline mode: what a run writes, and the no-credentials fallback."""

from __future__ import annotations

import json
import time

import pytest
from helpers import TINY, make_cfg

from bench.logger import _has_credentials
from bench.run import run

pytestmark = pytest.mark.slow


def test_no_credentials_falls_back_to_offline_with_a_notice(tmp_path, data_root, monkeypatch, capfd):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not _has_credentials()
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, "logger=wandb", "name=wb", "tags=[a,b]"],
        data_root=data_root,
        output_dir=tmp_path / "out",
    )
    record = run(cfg, tmp_path / "run", "wb-run")
    assert "wandb: no credentials found, logging offline" in capfd.readouterr().err

    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (table,) = offline.glob("files/media/table/test/per_class_*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["class", "dsc", "iou", "hd95", "nsd", "assd"]
    logged = {r[0]: r[1] for r in rows["data"]}
    assert logged == pytest.approx({c: m["dsc"] for c, m in record["metrics"]["per_class"].items()})
    (log,) = offline.glob("run-*.wandb")
    keys = (b"test/dsc", b"test/hd95/liver", b"test/nsd/liver", b"test/assd", b"train/loss", b"wb-run")
    for _ in range(60):  # the W&B service flushes its log asynchronously after finish()
        raw = log.read_bytes()
        if all(k in raw for k in keys):
            break
        time.sleep(0.5)
    assert [k for k in keys if k not in raw] == []


def test_credentials_are_found_in_env_or_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert not _has_credentials()
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert _has_credentials()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert _has_credentials()
