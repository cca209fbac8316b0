"""``scripts/gpu_check.py`` runs on a CPU with ``--quick`` (so that it never rots) and never overwrites
the committed GPU report."""

from __future__ import annotations

import math

import pytest
from fixtures_formats import load_script

gpu_check = load_script("gpu_check")


def test_quick_needs_an_explicit_out_other_than_the_gpu_report(tmp_path):
    before = gpu_check.DEFAULT_OUT.read_bytes() if gpu_check.DEFAULT_OUT.exists() else None
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--quick"])
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--quick", "--out", str(gpu_check.DEFAULT_OUT)])
    after = gpu_check.DEFAULT_OUT.read_bytes() if gpu_check.DEFAULT_OUT.exists() else None
    assert before == after


@pytest.mark.slow
def test_quick_run_on_cpu_measures_every_section(tmp_path):
    out = tmp_path / "gpu.md"
    res = gpu_check.main(
        ["--device", "cpu", "--quick", "--out", str(out), "--losses", "boundary", "dmce", "boundary_aware"]
    )
    settings = ("paper_synapse", "paper_cityscapes")
    trained = {(r["setting"], r["compile"]): r for r in res["training"]}
    for s in settings:
        assert trained[(s, False)]["steps_per_s"] > 0 and trained[(s, False)]["steps"] >= 1
        assert trained[(s, True)]["skipped"] == "--quick"
        per_loss = res["losses"][s]
        assert set(per_loss) == {"ce", "boundary", "dmce", "boundary_aware"}
        assert per_loss["ce"]["vs_ce"] == 1.0
        assert all(r["ms"] > 0 and r["vs_ce"] > 0 for r in per_loss.values()), per_loss
    assert {(r["setting"], r["maps"]) for r in res["loader"]} == {
        (s, m) for s in settings for m in ("none", "label_distance", "signed_distance")
    }
    assert all(r["samples_per_s"] > 0 for r in res["loader"])
    assert [r["protocol"] for r in res["evaluation"]] == ["cityscapes", "default"]
    assert all(r["cases_per_s"] > 0 and math.isfinite(r["hd95"]) for r in res["evaluation"])
    assert res["torchrun"]["backend"] == "gloo" and res["torchrun"]["steps"] == 2, res["torchrun"]
    text = out.read_text()
    assert "| `boundary_aware` | label_distance |" in text and "backend gloo" in text
