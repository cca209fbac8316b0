"""CUDA-only checks of the hot path (marker ``gpu``; skipped with the reason where there is no GPU):

- no host sync in any registered loss's forward + backward (``torch.cuda.set_sync_debug_mode``),
  target maps given as from the loader;
- bf16 autocast: every loss on bf16 logits equals the float32 computation on the same values;
- SyncBatchNorm (one process) equals BatchNorm;
- the cupy EDT equals the CPU EDT for every map;
- channels_last: the model and every loss give the same values as with contiguous tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from losses import create_loss, list_losses, loss_info
from losses.distance import _GPU_EDT, GT_MAPS, edt_batch, gt_maps

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

B, C, H, W = 2, 5, 32, 40
CUDA = torch.device("cuda")
#: losses whose step needs an EDT of the *prediction*: sync-free only with the GPU EDT (cupy)
PREDICTION_EDT = {"hausdorff", "active_boundary"}


def loss_and_inputs(name: str, tmp: Path, device: torch.device, seed: int = 0):
    """The loss on ``device``, logits (leaf, float32), target with ignored pixels, the runtime inputs
    and the declared target maps (computed on the CPU and moved, as from the loader)."""
    gen = torch.Generator().manual_seed(seed)
    hparams = {}
    if name == "inverseform":
        from losses.inverseform import InverseNet

        path = tmp / "inversenet.pt"
        if not path.exists():  # one random network per test
            torch.save(InverseNet(patch=8, hidden=(16,)).checkpoint(), path)
        hparams = {"checkpoint": str(path)}
    info = loss_info(name)
    loss = create_loss(name, num_classes=C, **hparams).to(device)
    target = torch.randint(0, C, (B, H // 4, W // 4), generator=gen)
    target = target.repeat_interleave(4, 1).repeat_interleave(4, 2)  # blocks: regions, boundaries
    target[:, :3, :5] = 255
    logits = (2 * torch.randn(B, C, H, W, generator=gen)).to(device).requires_grad_()
    extra = {}
    if "aux" in info.inputs:
        aux = torch.randn(B, info.num_aux_channels(C), H, W, generator=gen)
        extra["aux"] = aux.to(device).requires_grad_()
    if "features" in info.inputs:
        extra["features"] = torch.randn(B, 16, H // 2, W // 2, generator=gen).to(device).requires_grad_()
    if "progress" in info.inputs:
        extra["progress"] = 0.5
    maps = {k: v.to(device) for k, v in gt_maps(target, info.gt_maps(), C).items()}
    return loss, logits, target.to(device), extra, maps


@pytest.mark.parametrize("name", list_losses())
def test_no_host_sync_in_forward_and_backward(name, tmp_path):
    if name in PREDICTION_EDT and _GPU_EDT is None:
        pytest.skip("needs the GPU EDT for the prediction's maps: pip install -e '.[gpu]'")
    loss, logits, target, extra, maps = loss_and_inputs(name, tmp_path, CUDA)
    loss(logits, target, **extra, **maps).backward()  # warm-up: lazy CUDA/cuBLAS/cupy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = loss(logits, target, **extra, **maps)
        value.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(value).item()


@pytest.mark.parametrize("name", list_losses())
def test_bf16_autocast_matches_float32_on_the_same_values(name, tmp_path):
    loss, logits, target, extra, maps = loss_and_inputs(name, tmp_path, CUDA)
    with torch.no_grad():
        logits.copy_(logits.bfloat16().float())  # values a bf16 model can output
    reference = loss(logits, target, **extra, **maps)
    (g_ref,) = torch.autograd.grad(reference, logits)
    half = logits.detach().bfloat16().requires_grad_()
    loss, *_ = loss_and_inputs(name, tmp_path, CUDA)  # fresh state (e.g. hausdorff's running means)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = loss(half, target, **extra, **maps)
    (g_half,) = torch.autograd.grad(value, half)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(g_half.float(), g_ref, rtol=2e-2, atol=1e-4)  # the gradient is bf16


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, C, 1))


def test_sync_batchnorm_in_one_process_equals_batchnorm(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        x = torch.randn(4, 3, 16, 16, device=CUDA)
        plain = tiny_model().to(CUDA)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(tiny_model()).to(CUDA)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        out_plain, out_sync = plain(x), synced(x)
        torch.testing.assert_close(out_sync, out_plain)
        out_plain.square().mean().backward()
        out_sync.square().mean().backward()
        for p, s in zip(plain.parameters(), synced.parameters(), strict=True):
            torch.testing.assert_close(s.grad, p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(synced[1].running_mean, plain[1].running_mean)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(_GPU_EDT is None, reason="cupy/cuCIM not installed: pip install -e '.[gpu]'")
def test_gpu_edt_equals_cpu_edt():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, C, (3, 24, 30), generator=gen).repeat_interleave(2, 1)
    labels[0, :4] = 255
    labels[1] = 2  # one class fills the image
    for name, fn in GT_MAPS.items():
        torch.testing.assert_close(fn(labels.to(CUDA), C).cpu(), fn(labels, C), rtol=0, atol=1e-5, msg=name)
    masks = torch.rand(4, 17, 23, generator=gen) < 0.7
    masks[1] = True
    masks[2] = False
    torch.testing.assert_close(edt_batch(masks.to(CUDA)).cpu(), edt_batch(masks), rtol=0, atol=1e-5)
    volumes = torch.rand(2, 6, 9, 11, generator=gen) < 0.6
    spacing = (2.5, 0.8, 0.8)
    got = edt_batch(volumes.to(CUDA), spacing).cpu()
    torch.testing.assert_close(got, edt_batch(volumes, spacing), rtol=1e-6, atol=1e-5)


def test_channels_last_model_output_equals_contiguous():
    model = tiny_model().to(CUDA).eval()
    x = torch.randn(2, 3, 32, 40, device=CUDA)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_accepts_channels_last_logits(name, tmp_path):
    loss, logits, target, extra, maps = loss_and_inputs(name, tmp_path, CUDA)
    reference = loss(logits, target, **extra, **maps)
    (g_ref,) = torch.autograd.grad(reference, logits)
    loss, *_ = loss_and_inputs(name, tmp_path, CUDA)
    cl = logits.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    cl_extra = {
        k: v.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        if isinstance(v, torch.Tensor) and v.dim() == 4
        else v
        for k, v in extra.items()
    }
    value = loss(cl, target, **cl_extra, **maps)
    (g_cl,) = torch.autograd.grad(value, cl)
    torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_cl, g_ref, rtol=1e-3, atol=1e-6)
