"""The contract every registered loss keeps (parametrised over ``list_losses()`` at collection time).

Runtime inputs are built from ``loss_info(name).inputs``. A loss that legitimately cannot keep a
property is listed in ``EXCEPTIONS`` with the reason; its test then runs as a strict xfail, so the
entry has to go once the loss keeps the property.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from losses import create_loss, list_losses, loss_info, register_loss

B, C, H, W = 2, 4, 16, 16
FEATURES = 8
#: the ignore tests run with the usual 255 and with torch's -100: no loss may hard-code 255
IGNORES = (255, -100)
CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"

#: property -> {loss name: why it cannot hold}. Keep this the only place with per-loss exceptions.
EXCEPTIONS: dict[str, dict[str, str]] = {}


def _inverseform(tmp: Path) -> dict:
    """A random 8×8 InverseNet checkpoint: the loss cannot be built without a trained one, and the
    contract does not depend on its weights."""
    from losses.inverseform import InverseNet

    path = tmp / "inversenet.pt"
    torch.save(InverseNet(patch=8, hidden=(16,)).checkpoint(), path)
    return {"checkpoint": str(path)}


#: Hyper-parameters without which a loss cannot be built here: name -> builder(temp dir) -> kwargs.
BUILD: dict[str, Callable[[Path], dict]] = {"inverseform": _inverseform}


def cases(prop: str) -> list:
    """``list_losses()`` with the exceptions of ``prop`` marked as strict xfails."""
    excused = EXCEPTIONS.get(prop, {})
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=excused[n], strict=True)) if n in excused else n
        for n in list_losses()
    ]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def make(tmp_path_factory) -> Callable[..., nn.Module]:
    """``make(name, **hparams)``: ``create_loss`` for C classes; the loss's ``BUILD`` kwargs win over
    ``hparams`` (they stand in for what a test cannot have, such as a trained checkpoint)."""
    tmp, built = tmp_path_factory.mktemp("losses"), {}

    def make(name: str, ignore_index: int = 255, **hparams) -> nn.Module:
        if name not in built:
            built[name] = BUILD[name](tmp) if name in BUILD else {}
        return create_loss(name, num_classes=C, ignore_index=ignore_index, **{**hparams, **built[name]})

    return make


def runtime_inputs(name: str) -> dict:
    """Random ``aux`` / ``features`` (requiring grad) and ``progress`` as the loss declares them."""
    info, out = loss_info(name), {}
    if "aux" in info.inputs:
        out["aux"] = torch.randn(B, info.num_aux_channels(C), H, W).requires_grad_()
    if "features" in info.inputs:
        out["features"] = torch.randn(B, FEATURES, H // 2, W // 2).requires_grad_()
    if "progress" in info.inputs:
        out["progress"] = 0.5
    return out


def random_target(classes: int = C, ignored: float = 0.0, ignore: int = 255) -> Tensor:
    target = torch.randint(0, classes, (B, H, W))
    return torch.where(torch.rand(B, H, W) < ignored, torch.full_like(target, ignore), target)


def confident(target: Tensor, margin: float = 12.0) -> Tensor:
    """Logits with ``margin`` on the target class (class 0 at ignored pixels)."""
    safe = torch.where((target < 0) | (target >= C), torch.zeros_like(target), target)
    return margin * F.one_hot(safe, C).permute(0, 3, 1, 2).float()


def value_and_grads(
    loss: nn.Module, logits: Tensor, target: Tensor, inputs: dict
) -> tuple[Tensor, list[Tensor]]:
    """Loss value (detached) and the gradients of logits, tensor inputs and the loss's parameters."""
    logits = logits.detach().requires_grad_()
    value = loss(logits, target, **inputs)
    leaves = [
        logits,
        *(v for v in inputs.values() if isinstance(v, Tensor)),
        *(p for p in loss.parameters() if p.requires_grad),
    ]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]
    return value.detach(), grads


def assert_finite(value: Tensor, grads: list[Tensor]) -> None:
    assert value.dim() == 0, f"loss must be a scalar, got shape {tuple(value.shape)}"
    assert torch.isfinite(value), f"value {value}"
    for g in grads:
        assert torch.isfinite(g).all(), "non-finite gradient"


@pytest.mark.parametrize("name", cases("perfect_is_best"))
def test_perfect_prediction_scores_below_worse_and_random(name, make):
    target, inputs = random_target(), runtime_inputs(name)
    loss = make(name)
    wrong = torch.rand(B, H, W) < 0.25
    worse_target = torch.where(wrong, (target + 1) % C, target)
    with torch.no_grad():
        perfect = loss(confident(target), target, **inputs)
        worse = loss(confident(worse_target), target, **inputs)
        random = loss(3 * torch.randn(B, C, H, W), target, **inputs)
    assert perfect < worse, f"perfect {perfect:.6g} !< 25% wrong {worse:.6g}"
    assert perfect <= random, f"perfect {perfect:.6g} > random {random:.6g}"


@pytest.mark.parametrize("ignore", IGNORES)
@pytest.mark.parametrize("name", cases("finite_random"))
def test_random_inputs_give_finite_value_and_gradients(name, ignore, make):
    target = random_target(ignored=0.2, ignore=ignore)
    assert_finite(*value_and_grads(make(name, ignore), torch.randn(B, C, H, W), target, runtime_inputs(name)))


@pytest.mark.parametrize("name", cases("finite_absent_class"))
def test_absent_class_gives_finite_value_and_gradients(name, make):
    target = random_target(classes=C - 1, ignored=0.1)  # class C-1 never occurs
    assert_finite(*value_and_grads(make(name), torch.randn(B, C, H, W), target, runtime_inputs(name)))
    assert_finite(*value_and_grads(make(name), confident(target), target, runtime_inputs(name)))


@pytest.mark.parametrize("name", cases("finite_single_class"))
def test_single_class_gives_finite_value_and_gradients(name, make):
    target = torch.where(random_target(ignored=0.1) == 255, 255, 1)
    assert_finite(*value_and_grads(make(name), torch.randn(B, C, H, W), target, runtime_inputs(name)))
    assert_finite(*value_and_grads(make(name), confident(target), target, runtime_inputs(name)))


@pytest.mark.parametrize("ignore", IGNORES)
@pytest.mark.parametrize("name", cases("all_ignored_is_zero"))
def test_all_ignored_batch_gives_zero_with_finite_gradients(name, ignore, make):
    target = torch.full((B, H, W), ignore)
    value, grads = value_and_grads(make(name, ignore), torch.randn(B, C, H, W), target, runtime_inputs(name))
    assert_finite(value, grads)
    assert abs(value.item()) < 1e-6, f"all-ignored batch gives {value.item()}, expected 0"
    assert not grads[0].any(), "ignored pixels receive a gradient"


@pytest.mark.parametrize("ignore", IGNORES)
@pytest.mark.parametrize("name", cases("ignored_logits_inert"))
def test_logits_at_ignored_pixels_change_neither_value_nor_gradient(name, ignore, make):
    target, inputs = random_target(ignored=0.3, ignore=ignore), runtime_inputs(name)
    a = torch.randn(B, C, H, W)
    b = torch.where((target == ignore).unsqueeze(1), 10 * torch.randn(B, C, H, W), a)
    loss = make(name, ignore)
    value_a, grads_a = value_and_grads(loss, a, target, inputs)
    value_b, grads_b = value_and_grads(loss, b, target, inputs)
    torch.testing.assert_close(value_a, value_b)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb)
    assert not (grads_a[0] * (target == ignore).unsqueeze(1)).any(), "ignored pixels receive a gradient"


@pytest.mark.parametrize("name", cases("bf16_autocast"))
def test_bf16_autocast_is_finite_and_close_to_fp32(name, make):
    target = random_target(ignored=0.1)
    logits = torch.randn(B, C, H, W).bfloat16()
    inputs = runtime_inputs(name)
    loss = make(name)
    with torch.no_grad():
        reference = loss(logits.float(), target, **inputs)
        half = {k: v.bfloat16() if isinstance(v, Tensor) else v for k, v in inputs.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(logits, target, **half)
    assert torch.isfinite(value)
    assert abs(value.float() - reference) <= 0.05 * abs(reference) + 0.02, f"bf16 {value} vs fp32 {reference}"


@pytest.mark.parametrize("name", list_losses())
def test_unknown_hyperparameter_is_rejected_by_name(name):
    with pytest.raises(ValueError, match="no_such_hparam"):
        create_loss(name, num_classes=C, no_such_hparam=1.0)


CHOSEN = [(n, f) for n in list_losses() for f in loss_info(n).all_choices]


@pytest.mark.parametrize(("name", "field"), CHOSEN)
def test_value_outside_the_choices_is_rejected_naming_the_field_and_the_fix(name, field):
    allowed = loss_info(name).all_choices[field]
    assert loss_info(name).hparams[field] in allowed, "the default must be one of the choices"
    bad = 1 if isinstance(allowed[0], bool) else "no_such_choice"  # 1 == True, but not a bool
    with pytest.raises(ValueError, match=rf"{field}={bad!r} is not one of .*loss\.params\.{field}"):
        create_loss(name, num_classes=C, **{field: bad})


def test_registering_ranges_or_choices_of_no_hyperparameter_fails():
    def factory(num_classes: int, ignore_index: int = 255, gamma: float = 1.0, mode: str = "a") -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match=r"name no hyper-parameter: \['gama', 'moed'\]"):
        typos = {"ranges": {"gama": (0, 1)}, "choices": {"moed": ("a",)}}
        register_loss("_typo", category="pixel", reference="-", **typos)(factory)
    assert "_typo" not in list_losses()


def test_list_losses_selects_the_survey_losses():
    survey, extra = list_losses(survey=True), list_losses(survey=False)
    assert survey == sorted(n for n in list_losses() if loss_info(n).survey)
    assert sorted(survey + extra) == list_losses() and "sum" in extra and "dice" in survey
    assert len(survey) == 25  # the survey's losses (Azad et al., Table 2)


#: MONAI's options, shared by every region and combination loss (they belong to a composite's terms)
FAMILY_OPTIONS = ("include_background", "smooth", "batch")
EXCEPTIONS["family_options"] = {
    "sum": "a composite: the options belong to its terms' params",
    # not overlap ratios: no Dice-like quotient to smooth, and per-image by definition (documented)
    "rmi": "mutual information of k×k label/prediction neighbourhoods per image and class",
    "t_loss": "a Student-t likelihood of each image's residual vector (its ε guards ν, not a ratio)",
    # GWDS's true positives are measured against the background class (M[g, b]): it cannot be left out
    "wasserstein_dice": "takes smooth and batch; the background is GWDS's reference class",
}


@pytest.mark.parametrize(
    "name",
    [
        p
        for p in cases("family_options")
        if loss_info(p if isinstance(p, str) else p.values[0]).category in ("region", "combination")
    ],
)
def test_region_and_combination_losses_take_the_family_options(name):
    missing = [k for k in FAMILY_OPTIONS if k not in loss_info(name).hparams]
    assert not missing, f"{name} lacks {missing}"


RANGED = [(n, f) for n in list_losses() for f in loss_info(n).ranges]


@pytest.mark.parametrize(("name", "field"), RANGED)
def test_out_of_range_value_is_rejected_naming_the_field(name, field):
    low, high = loss_info(name).ranges[field]
    bad = low - 1 if low is not None else high + 1
    with pytest.raises(ValueError, match=re.escape(field)):
        create_loss(name, num_classes=C, **{field: bad})


@pytest.mark.parametrize("name", list_losses())
def test_config_file_names_the_loss_and_its_params_are_accepted(name, make):
    path = CONF / f"{name}.yaml"
    assert path.is_file(), f"missing {path}"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and " — " in first, (
        f"{path}: first line must be '# <Full name> — <reference>. …'"
    )
    conf = OmegaConf.to_container(OmegaConf.load(path))
    assert set(conf) == {"name", "params"}, f"{path}: keys {sorted(conf)}"
    assert conf["name"] == name
    make(name, **(conf["params"] or {}))


@pytest.mark.parametrize("name", list_losses())
def test_config_params_are_the_registry_defaults(name):
    """``conf/loss/<name>.yaml`` spells out every hyper-parameter at its signature default: a run of
    ``+loss=<name>`` is the loss as documented, and its record lists all of its hyper-parameters."""
    params = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")).get("params") or {}
    assert params == loss_info(name).hparams, f"conf/loss/{name}.yaml params differ from the signature"


class TinyNet(nn.Module):
    """Two convolutions; the hidden map doubles as ``features`` (pooled) and feeds an ``aux`` head."""

    def __init__(self, aux_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(C, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, C, 1)
        self.aux = nn.Conv2d(16, aux_channels, 1) if aux_channels else None

    def forward(self, x: Tensor) -> tuple[Tensor, dict]:
        h = self.body(x)
        extras = {"features": F.avg_pool2d(h, 2)}
        if self.aux is not None:
            extras["aux"] = self.aux(h)
        return self.head(h), extras


def pixel_accuracy(logits: Tensor, target: Tensor) -> float:
    valid = target != 255
    return ((logits.argmax(1) == target) & valid).sum().item() / valid.sum().item()


@pytest.mark.parametrize("name", cases("overfits"))
def test_tiny_model_overfits_a_fixed_batch(name, make):
    info = loss_info(name)
    blocks = torch.randint(0, C, (B, H // 4, W // 4))
    target = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
    target[:, :, :2] = 255
    image = F.one_hot(blocks, C).permute(0, 3, 1, 2).float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    image = image + 0.5 * torch.randn_like(image)
    net = TinyNet(info.num_aux_channels(C))
    loss = make(name)
    opt = torch.optim.Adam([*net.parameters(), *loss.parameters()], lr=0.05)
    before = pixel_accuracy(net(image)[0], target)
    steps = 30
    for step in range(steps):
        logits, extras = net(image)
        inputs = {k: extras[k] for k in info.inputs if k in extras}
        if "progress" in info.inputs:
            inputs["progress"] = step / steps
        opt.zero_grad()
        loss(logits, target, **inputs).backward()
        opt.step()
    after = pixel_accuracy(net(image)[0], target)
    assert after >= 0.8 and after >= before + 0.4, f"pixel accuracy {before:.2f} -> {after:.2f}"
