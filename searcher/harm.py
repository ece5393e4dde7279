"""Class-level harm of the models on the front (compression can hurt a few classes far more than
Top-1 shows): per-class accuracy and precision change against the baseline, the classes whose
change is outside the sampling spread, and the validation images whose prediction flips.

A class is flagged when its accuracy change is worse than the model's Top-1 change by more than
twice the class's binomial standard error (a class of 36 images at 97% has an SE of 2.8 points).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgetune.objectives.evaluate import per_class_accuracy

from . import artifacts
from .report_plots import pyplot

MAX_THUMBNAILS = 32


def class_metrics(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (recall) and precision, in percent."""
    accuracy = np.array(per_class_accuracy(predictions, labels, num_classes))
    precision = np.full(num_classes, np.nan)
    for c in range(num_classes):
        chosen = predictions == c
        if chosen.any():
            precision[c] = (labels[chosen] == c).mean() * 100
    return accuracy, precision


def flagged_classes(base_acc: np.ndarray, trial_acc: np.ndarray, counts: np.ndarray, top1_change: float) -> list[int]:
    flagged = []
    for c, (b, t, n) in enumerate(zip(base_acc, trial_acc, counts)):
        if n == 0 or math.isnan(b) or math.isnan(t):
            continue
        p = min(max(b / 100, 1 / n), 1 - 1 / n)
        standard_error = 100 * math.sqrt(p * (1 - p) / n)
        if (t - b) < top1_change - 2 * standard_error:
            flagged.append(c)
    return flagged


def flips(base_pred: np.ndarray, trial_pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of validation images that went right->wrong and wrong->right."""
    base_ok, trial_ok = base_pred == labels, trial_pred == labels
    return np.flatnonzero(base_ok & ~trial_ok), np.flatnonzero(~base_ok & trial_ok)


def plot_flips(images: np.ndarray, indices: np.ndarray, labels: np.ndarray, base_pred: np.ndarray,
               trial_pred: np.ndarray, mean, std, title: str, path: Path) -> Path:
    plt = pyplot()
    shown = indices[:MAX_THUMBNAILS]
    columns = 8
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45 + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        image = images[index] * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
        ax.set_title(f"{labels[index]}: {base_pred[index]}→{trial_pred[index]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def class_harm_section(data, artifacts_dir: str, splits, out: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines and thumbnail files for each model on the front."""
    labels = splits.y_val.numpy()
    classes = splits.classes
    counts = np.bincount(labels, minlength=len(classes))
    base_id = data.baseline.get("artifact_id")
    if not base_id:
        return ["## Class-level harm", "", "The baseline's predictions were not stored with this study.", ""], []
    base_pred = artifacts.predictions(artifacts_dir, base_id)
    base_acc, base_prec = class_metrics(base_pred, labels, len(classes))
    lines = ["## Class-level harm (models on the front)", "",
             "Flagged: classes whose accuracy change is worse than the model's Top-1 change by more than "
             "twice the class's binomial standard error.", ""]
    files = []
    for row in data.front:
        trial_pred = artifacts.predictions(artifacts_dir, row.attrs["artifact_id"])
        acc, prec = class_metrics(trial_pred, labels, len(classes))
        change = row.attrs["top1"] - data.baseline["top1"]
        flagged = flagged_classes(base_acc, acc, counts, change)
        worse, better = flips(base_pred, trial_pred, labels)
        lines += [f"### Trial {row.number} (Top-1 {row.attrs['top1']:.2f}%, {change:+.2f})", "",
                  f"Flips: {len(worse)} right→wrong, {len(better)} wrong→right. "
                  f"Flagged classes: {', '.join(classes[c] for c in flagged) or 'none'}.", "",
                  "| class | images | accuracy % | Δ accuracy | precision % | Δ precision |", "|---|---|---|---|---|---|"]
        for c, name in enumerate(classes):
            mark = " **⚑**" if c in flagged else ""
            lines.append(f"| {name}{mark} | {counts[c]} | {acc[c]:.1f} | {acc[c] - base_acc[c]:+.1f} | "
                         f"{prec[c]:.1f} | {prec[c] - base_prec[c]:+.1f} |")
        lines.append("")
        if len(worse):
            shown = worse[:MAX_THUMBNAILS]  # only these are decoded: a streamed set is not in memory
            path = plot_flips(splits.val.take(shown).numpy(), np.arange(len(shown)), labels[shown], base_pred[shown],
                              trial_pred[shown], splits.mean, splits.std,
                              f"trial {row.number}: right → wrong (true: baseline→trial)", out / f"flips-trial-{row.number}.png")
            files.append(path)
            lines += [f"![flips of trial {row.number}]({path.name})", ""]
    return lines, files
