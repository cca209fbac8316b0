"""How each registered loss compares with its authors' public code (the README table's column).

``AUTHORS_CODE[name]`` starts with ``equal`` (by default, value and gradient, in the authors'
convention; tested against a transcription or a port in ``tests/``), ``documented deviation`` (what
differs; the docstring has the details and the hyper-parameter restoring the original where one
exists) or ``no public code``. Every registered loss has an entry (checked by a test).
"""

from __future__ import annotations

AUTHORS_CODE: dict[str, str] = {
    # pixel
    "ce": "equal (torch `cross_entropy`)",
    "dmce": "no public code (Calivá et al.); SegLossOdyssey's port weights the rim (d_max−1)/d_max "
    "and returns the unweighted CE, here the rim gets weight 2",
    "focal": "documented deviation: softmax over classes with optional per-class α (original: "
    "per-anchor sigmoid, α = 0.25)",
    "ohem_ce": "documented deviation from HRNet: ties, and batches with fewer than `min_kept` valid "
    "pixels keep all",
    "topk": "documented deviation from nnU-Net's `TopKLoss`: k % of the valid pixels, at least one",
    # region
    "cldice": "documented deviation: per class (jocpae/clDice pools all channels); equal to their "
    "loss with 2 classes and `include_background=False`",
    "dice": "equal (MONAI `DiceLoss`, V-Net's squared form), one-vs-rest",
    "focal_tversky": "documented deviation: mean over classes (paper: sum)",
    "generalized_dice": "documented deviation: weights normalised to sum 1 (changes only the role of "
    "the 1e-5 smoothing); `batch=True` as NiftyNet 2017; equal to MONAI's `GeneralizedDiceLoss`",
    "jaccard": "equal (MONAI `DiceLoss(jaccard=True)`), one-vs-rest",
    "log_cosh_dice": "documented deviation: smoothing 1e-5 (Jadon: 1)",
    "lovasz": "equal (bermanmaxim/LovaszSoftmax `lovasz_softmax`)",
    "rmi": "documented deviation from ZJULearning/RMI: RMI term shifted by ½·ln α per class (same "
    "gradient), pixel loss / n valid pixels (theirs / (n + 1)), points over ignored pixels left out",
    "sensitivity_specificity": "documented deviation: mean over classes (NiftyNet: sum)",
    "t_loss": "documented deviation: one-vs-rest, NLL divided by C × valid pixels (authors: per image)",
    "tversky": "equal (MONAI `TverskyLoss`), one-vs-rest",
    "wasserstein_dice": "equal (MONAI's `GeneralizedWassersteinDiceLoss`, by Fidon)",
    # boundary
    "active_boundary": "documented deviation: ε per image (`threshold=batch` restores abl.py's "
    "batch-wide loop, then equal); ignored pixels are no GT boundary (theirs: all boundary)",
    "boundary": "documented deviation from LIVIAETS/boundary-loss: absent classes' GDL weights "
    "(theirs 1e20); one-vs-rest",
    "boundary_aware": "no public code; semantic-segmentation adaptation of the instance loss",
    "boundary_dou": "equal (authors' `BoundaryDoULoss`), one-vs-rest",
    "conditional_boundary": "equal to CBLocr_head's losses for a bias-free linear head (gradients "
    "also reach the head)",
    "hausdorff": "documented deviation: λ adapted per step (paper: per epoch); the HD term equals "
    "MONAI's `HausdorffDTLoss`",
    "inverseform": "documented deviation: no edge-attention CE nor per-image class weights; the "
    "InverseNet sees sigmoid edges",
    "region_wise": "equal (authors' RRW maps)",
    # combination
    "combo": "equal to the paper's formula in the authors' setting (foreground, smoothing 1); their "
    "Keras file mis-brackets the BCE",
    "dice_ce": "equal (TransUNet's `0.5·CE + 0.5·DiceLoss`)",
    "exp_log": "no public code; the paper's formula",
    "unified_focal": "equal to mlyg/unified-focal-loss for 2 classes at λ = 0.5 (they put λ on the "
    "Tversky term, here the paper's focal term; no clipping)",
    "sum": "composite of registered losses (no original)",
}
