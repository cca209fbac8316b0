"""Test-session settings: no network, W&B disabled unless a test enables it, few threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: pretrained weights must fail fast
os.environ.setdefault("WANDB_MODE", "disabled")
# `make test` runs two pytest workers (pytest-xdist): one thread each then
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end (``slow``) tests first: the workers start the long jobs early and the short
    ones fill in, rather than one long test finishing last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Shared folder for generated datasets (generated once per parameter set)."""
    return tmp_path_factory.mktemp("data")
