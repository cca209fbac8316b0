"""Statistics over runs beyond mean ± std: paired tests, bootstrap intervals, ranks, object size.

The unit of the case-level statistics is the evaluation case (a volume or an image): a case's value
is the NaN-mean over its classes (excluded empty pairs are NaN), then the mean over the run's seeds.

- :func:`paired_tests`: every loss against a baseline on the cases both have, per metric and
  section: Wilcoxon signed-rank (``scipy.stats.wilcoxon``, two-sided, zero differences dropped;
  all-zero differences give p = 1) with Holm's step-down correction over the losses of a section.
- :func:`bootstrap_ci` / :func:`ci_table`: seeded percentile-bootstrap interval of the mean.
- :func:`rank_table`: the rank of each loss in each section (1 = best, ties share the mean rank)
  and its mean rank across sections — across datasets and models.
- :func:`size_table`: the per-class metric averaged over small / medium / large classes, grouped by
  their mean ground-truth size per case (:func:`class_sizes`, from the ``gt_size`` the evaluator
  wrote into each per-case row of the records), since the best loss depends on it.
- :func:`sensitivity_table`: metric against each hyper-parameter changed from its default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

import losses

from .load import changed_params
from .schema import GT_SIZE, KEYS, LOWER_IS_BETTER, MEANS, SECTION, per_class_metric
from .table import section_title

SIZE_GROUPS = ("small", "medium", "large")


def case_means(cases: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per (row keys, case): NaN-mean over classes, then mean over seeds."""
    per_seed = cases.groupby([*KEYS, "seed", "case"], sort=False)[metric].mean()
    return per_seed.groupby([*KEYS, "case"], sort=False).mean().reset_index()


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    if len(d) == 0:
        return np.nan, np.nan
    if not d.any():
        return 0.0, 1.0
    res = wilcoxon(d)
    return float(res.statistic), float(res.pvalue)


def paired_tests(
    cases: pd.DataFrame, *, baseline: str, metrics: Sequence[str] = tuple(MEANS), alpha: float = 0.05
) -> pd.DataFrame:
    """Each loss (and variant) against ``baseline`` (default hyper-parameters) per section and metric.

    ``cases`` comes from :func:`bench.results.load.load_cases`. Columns: the section keys, ``loss``,
    ``variant``, ``baseline``, ``metric``, ``n`` (paired cases), ``mean_diff``/``median_diff``
    (loss − baseline), ``statistic``, ``p``, ``p_holm``, ``significant`` (``p_holm < alpha``) and
    ``better`` (the loss that is significantly better, else ``""``; HD95: lower is better).
    """
    if baseline not in set(cases["loss"]):
        raise ValueError(
            f"baseline loss {baseline!r} has no completed run with per-case rows; "
            f"choose one of {', '.join(sorted(set(cases['loss'])))}"
        )
    rows = []
    for metric in metrics:
        values = case_means(cases, metric)
        for key, sec in values.groupby(SECTION, sort=False, dropna=False):
            wide = sec.pivot(index="case", columns=["loss", "variant"], values=metric)
            if (baseline, "") not in wide:
                continue
            base = wide[(baseline, "")]
            family = []
            for loss, var in wide.columns:
                if (loss, var) == (baseline, ""):
                    continue
                d = (wide[(loss, var)] - base).dropna().to_numpy()
                stat, p = _wilcoxon(d)
                family.append(
                    {
                        **dict(zip(SECTION, key, strict=True)),
                        "loss": loss,
                        "variant": var,
                        "baseline": baseline,
                        "metric": metric,
                        "n": len(d),
                        "mean_diff": d.mean() if len(d) else np.nan,
                        "median_diff": np.median(d) if len(d) else np.nan,
                        "statistic": stat,
                        "p": p,
                    }
                )
            for r, p_adj in zip(family, holm([r["p"] for r in family]), strict=True):
                significant = bool(p_adj < alpha)
                gain = r["mean_diff"] < 0 if metric in LOWER_IS_BETTER else r["mean_diff"] > 0
                r.update(p_holm=p_adj, significant=significant)
                r["better"] = (r["loss"] if gain else baseline) if significant else ""
            rows += family
    return pd.DataFrame(rows)


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap ``confidence`` interval of the mean of ``values`` (NaN ignored), seeded."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(x))  # resamples per batch: bounded memory
    means = np.concatenate(
        [
            x[rng.integers(0, len(x), (min(chunk, n_resamples - i), len(x)))].mean(1)
            for i in range(0, n_resamples, chunk)
        ]
    )
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def ci_table(
    cases: pd.DataFrame, *, metrics: Sequence[str] = tuple(MEANS), confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per row keys and metric: ``n`` cases, their ``mean`` and the bootstrap interval ``low``–``high``."""
    rows = []
    for metric in metrics:
        for key, g in case_means(cases, metric).groupby(KEYS, sort=False, dropna=False):
            v = g[metric].dropna().to_numpy()
            low, high = bootstrap_ci(v, confidence=confidence, seed=seed)
            rows.append(
                {
                    **dict(zip(KEYS, key, strict=True)),
                    "metric": metric,
                    "n": len(v),
                    "mean": v.mean() if len(v) else np.nan,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows)


def rank_table(summary: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Rank of each loss (default hyper-parameters) in every section by ``metric`` (default: the
    section's per-class metric, mean DSC or mIoU), and the ``mean rank`` over the sections it has."""
    table = summary[summary["variant"] == ""]
    ranks = {}
    for key, t in table.groupby(SECTION, sort=False, dropna=False):
        m = metric or per_class_metric(key[2])
        col = f"{section_title(key)} ({MEANS.get(m, m)})"
        ranks[col] = pd.Series(
            t[m].rank(ascending=m in LOWER_IS_BETTER, method="average").to_numpy(), index=t["loss"]
        )
    out = pd.DataFrame(ranks)
    out.insert(0, "mean rank", out.mean(axis=1))
    cats = table.drop_duplicates("loss").set_index("loss")["category"]
    out.insert(0, "category", cats.reindex(out.index))
    return out.sort_values("mean rank").rename_axis("loss").reset_index()


def class_sizes(cases: pd.DataFrame) -> pd.Series:
    """Mean ground-truth size per class (pixels/voxels per case, over the cases that contain it),
    indexed by class name, from the ``gt_size`` of per-case rows (:func:`bench.results.load.load_cases`);
    NaN for a class no case contains. A run whose rows have no ``gt_size`` is an error that names it."""
    unsized = cases.loc[cases[GT_SIZE].isna(), "run_dir"].drop_duplicates()
    if len(unsized):
        raise ValueError(
            f"{unsized.iloc[0]}: its record has no {GT_SIZE} in the per-case rows (written before the "
            f"evaluator recorded ground-truth sizes); re-evaluate the run (re-run it with force=true) "
            f"to use --by-size"
        )
    present = cases[cases[GT_SIZE] > 0]
    sizes = present.groupby("class", sort=False)[GT_SIZE].mean()
    return sizes.reindex(list(dict.fromkeys(cases["class"]))).astype(float)


def section_sizes(cases: pd.DataFrame) -> dict[tuple, pd.Series]:
    """:func:`class_sizes` of each section (name, data, protocol, model) of ``cases``, from the
    records of its own runs (so a run evaluated on ``data.test_dataset`` gives that data's sizes)."""
    return {key: class_sizes(g) for key, g in cases.groupby(SECTION, sort=False, dropna=False)}


def size_groups(sizes: pd.Series, classes: Sequence[str]) -> dict[str, list[str]]:
    """``classes`` sorted by size and cut into three near-equal groups: small, medium, large."""
    ordered = sizes.reindex(list(classes)).dropna().sort_values()
    parts = np.array_split(np.asarray(ordered.index), len(SIZE_GROUPS))
    return {g: list(p) for g, p in zip(SIZE_GROUPS, parts, strict=True)}


def size_table(
    summary: pd.DataFrame, sizes: Mapping[tuple, pd.Series], metric: str | None = None
) -> pd.DataFrame:
    """Per summary row: the mean per-class ``metric`` (default: the section's per-class metric)
    over the small, medium and large classes of its section (``sizes``: :func:`section_sizes`),
    and the classes of each group."""
    rows = []
    for key, t in summary.groupby(SECTION, sort=False, dropna=False):
        m = metric or per_class_metric(key[2])
        if key not in sizes:
            raise ValueError(
                f"no class sizes for section {section_title(key)!r}: it has no completed run with "
                f"per-case rows"
            )
        classes = [
            c.split("/", 1)[1]
            for c in t.columns
            if c.startswith(m + "/") and ":" not in c and t[c].notna().any()
        ]
        groups = size_groups(sizes[key], classes)
        for _, r in t.iterrows():
            row = {k: r[k] for k in KEYS} | {"metric": m}
            for g, members in groups.items():
                row[g] = pd.Series([r[f"{m}/{c}"] for c in members], dtype=float).mean()
            rows.append(row | {f"{g} classes": " ".join(members) for g, members in groups.items()})
    return pd.DataFrame(rows)


def _hashable(value: Any) -> Any:
    """A list or mapping value (e.g. a composite loss's ``terms``) as compact JSON, so that it can
    key a group; other values unchanged."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else value


def sensitivity_table(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """``metric`` against each hyper-parameter changed from its default, per section and loss.

    ``hparam`` names the changed hyper-parameter (several joined by ``,`` when a run changed them
    together), ``value`` its value (a tuple for several); the runs with every default join each
    ``hparam`` at the default value (``default`` True). ``mean``, ``std`` (ddof=1) and ``n`` are over
    the completed runs (seeds). Only losses run with a non-default value appear.
    """
    rows = []
    done = runs[runs["status"] == "completed"]
    for key, g in done.groupby([*SECTION, "loss"], sort=False, dropna=False):
        loss, m = key[4], metric or per_class_metric(key[2])
        points = []
        for params, value in zip(g["params"], g[m].to_numpy(dtype=float), strict=True):
            changed = changed_params(loss, params)
            points.append((",".join(changed), tuple(map(_hashable, changed.values())), value))
        for hparam in sorted({h for h, _, _ in points} - {""}):
            defaults = losses.loss_info(loss).hparams
            base = tuple(_hashable(defaults[k]) for k in hparam.split(","))
            by_value: dict[tuple, list[float]] = {}
            for h, val, v in points:
                if h in (hparam, ""):
                    by_value.setdefault(val if h else base, []).append(v)
            for val, vs in sorted(by_value.items()):
                v = np.asarray(vs)
                v = v[~np.isnan(v)]
                rows.append(
                    {
                        **dict(zip(SECTION, key[:4], strict=True)),
                        "loss": loss,
                        "metric": m,
                        "hparam": hparam,
                        "value": val[0] if len(val) == 1 else val,
                        "default": val == base,
                        "mean": v.mean() if len(v) else np.nan,
                        "std": v.std(ddof=1) if len(v) > 1 else np.nan,
                        "n": len(v),
                    }
                )
    return pd.DataFrame(rows)
