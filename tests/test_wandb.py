"""The real W&B client: what an offline run writes, the no-credentials fallback, and the offline
fallback when the server (a local unreachable, silent or failing address) cannot be used."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import TINY, make_cfg

from bench.logger import WandbLogger, _has_credentials
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


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Credentials set and no WANDB_MODE: the client would log online to WANDB_BASE_URL."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert _has_credentials()


def test_unreachable_server_continues_offline(tmp_path, data_root, monkeypatch, capfd, online):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    cfg = make_cfg(
        ["+loss=ce", "+data=synthetic", *TINY, "logger=wandb", "logger.init_timeout=5"],
        data_root=data_root,
        output_dir=tmp_path / "out",
    )
    record = run(cfg, tmp_path / "run", "wb-down")
    assert record["status"] == "completed"
    notices = [ln for ln in capfd.readouterr().err.splitlines() if "logging offline" in ln]
    assert len(notices) == 1 and "http://127.0.0.1:9 unreachable within 5 s" in notices[0]
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1


def _logger(run_dir, timeout):
    return WandbLogger(
        project="p",
        entity=None,
        group=None,
        job_type="train",
        tags=[],
        run_dir=run_dir,
        name="r",
        config={"a": 1},
        init_timeout=timeout,
    )


def test_silent_server_is_given_up_after_the_timeout(tmp_path, monkeypatch, capfd, online):
    with socket.socket() as hole:  # accepts connections (kernel backlog), never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{hole.getsockname()[1]}")
        t0 = time.monotonic()
        logger = _logger(tmp_path, 2)
        waited = time.monotonic() - t0
    logger.log({"train/loss": 1.0}, step=1)
    logger.finish(None)
    assert "unreachable within 2 s" in capfd.readouterr().err
    assert waited < 30  # bounded by the timeout (2 s) plus an offline init, not wandb's 90 s
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(500)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_failed_init_on_a_reachable_server_continues_offline(tmp_path, monkeypatch, capfd, online):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        logger = _logger(tmp_path, 2)
    finally:
        server.shutdown()
    logger.log({"train/loss": 1.0}, step=1)
    logger.finish(None)
    err = capfd.readouterr().err
    assert "wandb: init failed" in err and "logging offline instead" in err
    assert "in use" not in err
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_wandb_run_id_is_kept_on_resume_and_new_after_a_fresh_start(tmp_path, monkeypatch):
    """A resumed run (same run dir and creation time) continues its W&B run; ``force=true`` starts
    the run afresh (a new creation time), so it must not continue the old W&B run."""
    import wandb

    ids = []
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", lambda **kw: ids.append(kw["id"]))

    def start(created: str) -> None:
        WandbLogger(
            project="p", entity=None, group=None, job_type="train", tags=[], run_dir=tmp_path,
            name="n", config={}, created=created,
        )  # fmt: skip

    start("2026-01-01T00:00:00")
    start("2026-01-01T00:00:00")
    start("2026-02-02T00:00:00")
    assert ids[0] == ids[1] != ids[2]
