"""Every experiment recipe composes, sweeps what it documents, and runs end to end with +debug=synthetic.

Sweeps are expanded as Hydra's basic sweeper does (``hydra.sweeper.params``, then the command line,
one axis per key, the last value of a key winning; ``glob`` over the group's config files); a few jobs
run for real in-process and one ``-m`` sweep runs as a subprocess.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from omegaconf import OmegaConf

import datasets
import losses
from bench.naming import register_resolvers
from bench.results.__main__ import main
from bench.results.load import load_records
from bench.results.stats import SIZE_GROUPS
from bench.results.table import summary_table
from bench.run import run

EXPERIMENTS = Path(CONF) / "experiment"
RECIPES = sorted(p.relative_to(EXPERIMENTS).with_suffix("").as_posix() for p in EXPERIMENTS.rglob("*.yaml"))
SENSITIVITY = [r for r in RECIPES if r.startswith("sensitivity/")]
MAIN = [r for r in RECIPES if r not in SENSITIVITY and r != "demo"]
SURVEY = {n for n in losses.list_losses() if losses.loss_info(n).survey}


def _load_script():
    spec = importlib.util.spec_from_file_location("msr", ROOT / "scripts" / "make_sensitivity_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paths(tmp_path_factory, data_root) -> list[str]:
    register_resolvers()
    return [
        f"paths.root={ROOT}",
        f"paths.data_root={data_root}",
        f"paths.output_dir={tmp_path_factory.mktemp('out')}",
    ]


@pytest.fixture(scope="module")
def inversenet(tmp_path_factory) -> str:
    """A random tiny InverseNet checkpoint: InverseForm cannot be built without one."""
    from losses.inverseform import InverseNet

    path = tmp_path_factory.mktemp("inverseform") / "net.pt"
    torch.save(InverseNet(patch=8, hidden=(16,)).checkpoint(), path)
    return str(path)


def _compose(overrides: list[str], *, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def sweep_params(recipe: str, extra: list[str], paths: list[str]) -> dict[str, str]:
    """The recipe's ``hydra.sweeper.params`` (with ``extra`` on the command line)."""
    cfg = _compose([*paths, f"+experiment={recipe}", *extra], hydra=True)
    return dict(cfg.hydra.sweeper.params or {})


def sweep_axes(recipe: str, extra: list[str], paths: list[str]) -> dict[str, list[str]]:
    """Key → the job overrides of that key, as the basic sweeper expands them."""
    params = sweep_params(recipe, extra, paths)
    axes: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + extra):
        key = o.get_key_element()
        if isinstance(o.value(), Glob):
            options = sorted(p.stem for p in (Path(CONF) / o.key_or_group).glob("*.yaml"))
            axes[key] = [f"{key}={v}" for v in o.value().filter(options)]
        elif o.is_sweep_override():
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    return axes


def jobs(recipe: str, extra: list[str], paths: list[str]) -> list[list[str]]:
    axes = sweep_axes(recipe, extra, paths)
    return [[*paths, f"+experiment={recipe}", *job] for job in itertools.product(*axes.values())]


def test_every_recipe_is_a_documented_global_config():
    assert set(MAIN) >= {
        "paper_synapse",
        "paper_cityscapes",
        "authors_repo_synapse",
        "authors_repo_cityscapes",
        "synthia_to_cityscapes",
    }
    for recipe in RECIPES:
        head = (EXPERIMENTS / f"{recipe}.yaml").read_text().splitlines()
        assert head[0] == "# @package _global_", recipe
        assert head[1].startswith("# ") and "python -m bench" in "\n".join(head), recipe


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_a_valid_first_job_with_and_without_debug(recipe, paths, inversenet):
    for debug in ([], ["+debug=synthetic"]):
        job = jobs(recipe, [*debug, "+loss=ce"] if recipe == "demo" else debug, paths)[0]
        cfg = _compose(job)
        assert cfg.data.name in datasets.list_datasets()
        assert (Path(CONF) / "model" / f"{cfg.model.name}.yaml").is_file()
        params = OmegaConf.to_container(cfg.loss.params, resolve=True)
        if cfg.loss.name == "inverseform":
            params["checkpoint"] = inversenet
        losses.create_loss(cfg.loss.name, num_classes=cfg.data.num_classes, **params)
        if debug:
            assert (cfg.data.name, cfg.model.name, cfg.trainer.max_steps) == ("synthetic", "tiny", 4)
            assert cfg.data.train.img_size == cfg.data.generator.size == 32
            assert cfg.data.get("test_dataset") is None


@pytest.mark.parametrize("recipe", MAIN)
def test_paper_and_authors_recipes_sweep_every_survey_loss_over_two_models_and_three_seeds(recipe, paths):
    axes = sweep_axes(recipe, [], paths)
    assert {a.split("=", 1)[1] for a in axes["+loss"]} == SURVEY
    assert len(axes["model"]) == 2 and axes["seed"] == ["seed=0", "seed=1", "seed=2"]
    assert 1 <= len(jobs(recipe, ["+debug=synthetic", "+loss=ce"], paths)) <= 2


def test_paper_synapse_is_the_transunet_training_protocol_evaluated_both_ways(paths):
    axes = sweep_axes("paper_synapse", [], paths)
    assert "data.protocol" not in axes  # both protocols score the same training
    assert axes["model"] == ["model=unet_r34", "model=segformer_b2"]
    cfg = _compose(jobs("paper_synapse", ["+loss=ce"], paths)[0])
    assert list(cfg.data.protocol) == ["default", "transunet"]
    t = cfg.trainer
    assert (
        t.max_steps,
        t.optimizer.name,
        t.optimizer.lr,
        t.optimizer.momentum,
        t.optimizer.weight_decay,
    ) == (
        14000,
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert (t.scheduler.name, t.scheduler.power, cfg.data.batch_size, cfg.data.train.img_size) == (
        "poly",
        0.9,
        24,
        224,
    )
    assert list(cfg.data.eval_classes) == list(range(1, 9))


def test_authors_repo_recipes_use_adamw_one_cycle_50_epochs_at_batch_2_from_scratch(paths):
    for recipe, steps in (
        ("authors_repo_synapse", 50 * 2210 // 2),
        ("authors_repo_cityscapes", 50 * -(-2975 // 2)),
    ):
        cfg = _compose(jobs(recipe, ["+loss=ce"], paths)[0])
        t = cfg.trainer
        assert (t.max_steps, t.optimizer.name, t.optimizer.lr, t.scheduler.name) == (
            steps,
            "adamw",
            1e-2,
            "onecycle",
        )
        assert (cfg.data.batch_size, cfg.data.protocol, cfg.model.encoder_weights) == (2, "cityscapes", None)


def test_synthia_to_cityscapes_trains_on_all_synthia_and_names_cityscapes_for_testing(paths):
    cfg = _compose(jobs("synthia_to_cityscapes", ["+loss=ce"], paths)[0])
    assert (cfg.data.name, cfg.data.train.split, cfg.data.protocol) == ("synthia", "all", "cityscapes")
    assert (
        cfg.data.test_dataset.name == "cityscapes"
        and cfg.data.test_dataset.num_classes == cfg.data.num_classes
    )


def test_sensitivity_recipes_are_generated_from_the_registry():
    script = _load_script()
    on_disk = {p.name: p.read_text() for p in (EXPERIMENTS / "sensitivity").glob("*.yaml")}
    assert on_disk == script.recipes(), "run: python scripts/make_sensitivity_recipes.py"
    numeric = {
        n
        for n in losses.list_losses()
        for k, v in losses.loss_info(n).hparams.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("smooth", "epsilon")
    }
    assert {Path(r).name for r in SENSITIVITY} == numeric
    assert script.grid(2.0, 0, None) == [0.5, 1.0, 4.0, 8.0]
    assert script.grid(0.5, 0, 1) == [0.1, 0.3, 0.7, 0.9]
    assert script.grid(3, 1, None) == [1, 2, 6, 12]
    assert script.grid(0.0, None, None) == [0.05, 0.1, 0.2]


@pytest.mark.parametrize("recipe", SENSITIVITY)
def test_every_sensitivity_grid_value_changes_one_hyperparameter_and_passes_create_loss(
    recipe, paths, inversenet
):
    name = Path(recipe).name
    params = sweep_params(recipe, [], paths)
    assert (params["+loss"], params["model"], params["data.protocol"]) == (name, "unet_r34", "default")
    points = OverridesParser.create().parse_override(f"loss.params={params['loss.params']}").value().list
    assert points[0] == {} and len(points) > 1
    defaults = losses.loss_info(name).hparams
    extra = {"checkpoint": inversenet} if name == "inverseform" else {}
    for point in points[1:]:
        ((key, value),) = point.items()
        assert value != defaults[key]
        losses.create_loss(name, num_classes=9, **{**defaults, **extra, **point})


@pytest.mark.parametrize("recipe", [*MAIN, "sensitivity/focal"])
def test_debug_job_of_recipe_runs_to_a_completed_record(recipe, paths, tmp_path):
    sensitivity = recipe.startswith("sensitivity")
    job = jobs(recipe, ["+debug=synthetic"] if sensitivity else ["+debug=synthetic", "+loss=ce"], paths)[-1]
    record = run(_compose(job), tmp_path / "run", "debug-run")
    assert record["status"] == "completed", record.get("error")
    assert record["data"] == "synthetic" and record["timings"]["steps"] == 4


@pytest.mark.slow
def test_debug_multirun_of_paper_synapse_gives_both_protocols_in_the_table(tmp_path, data_root):
    env = {
        **os.environ,
        "SEGLOSS_OUTPUT": str(tmp_path / "out"),
        "SEGLOSS_DATA": str(data_root),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    args = ["-m", "+experiment=paper_synapse", "+debug=synthetic", "+loss=ce"]
    res = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "debug").rglob("record.json")]
    assert len(records) == 1  # one training, scored under both protocols
    blocks = [(r["loss"], m["protocol"]) for r in records for m in [r["metrics"], *r.get("more_metrics", [])]]
    assert sorted(blocks) == [("ce", "default"), ("ce", "transunet")]
    table = summary_table(load_records([tmp_path / "out"]))
    assert sorted(zip(table["protocol"], table["loss"], strict=True)) == sorted(
        (p, loss) for loss, p in blocks
    )
    assert set(table["seeds"]) == {1} and set(table["units"]) == {"mm", "voxel"}
    assert main([str(tmp_path / "out"), "--out", str(tmp_path / "tables"), "--by-size", "--no-plots"]) == 0
    row = pd.read_csv(tmp_path / "tables" / "sizes.csv").iloc[0]
    groups = [row[f"{g} classes"].split() for g in SIZE_GROUPS]
    # the evaluator's per-case ground-truth sizes (default protocol), averaged over the cases with the class
    m = records[0]["metrics"]
    cases = pd.DataFrame(m["per_case"])
    cases["class"] = cases["class"].map(
        dict(zip(sorted(cases["class"].unique()), m["per_class"], strict=True))
    )
    sizes = cases[cases["gt_size"] > 0].groupby("class")["gt_size"].mean()
    assert sorted(c for g in groups for c in g) == sorted(sizes.drop("background", errors="ignore").index)
    small, medium, large = ([sizes[c] for c in g] for g in groups)
    assert max(small) <= min(medium) and max(medium) <= min(large)
    assert not list((tmp_path / "tables").glob("*.png"))
