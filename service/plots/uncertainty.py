"""Plots of uncertainty: a model's reliability, a batch prediction's spread and its most
uncertain rows."""

import math
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from service.plots.figures import finite, new_figure

KINDS = (("plain", "plain"), ("mc_dropout", "MC Dropout"))


def reliability(numbers: dict[str, Any]) -> Figure:
    """Classifiers: reliability diagrams (plain, MC Dropout) with bin counts; regression:
    nominal against empirical interval coverage."""
    if numbers.get("reliability"):
        return _reliability_diagrams(numbers)
    return _coverage(numbers)


def _reliability_diagrams(numbers: dict[str, Any]) -> Figure:
    figure = new_figure(12.0, 6.5)
    grid = figure.add_gridspec(2, 2, height_ratios=[3, 1])
    for col, (kind, title) in enumerate(KINDS):
        bins = numbers["reliability"][kind]
        top = figure.add_subplot(grid[0, col])
        bottom = figure.add_subplot(grid[1, col], sharex=top)
        _diagram(top, bins)
        ece = numbers.get(kind, {}).get("ece")
        top.set_title(f"{title}: ECE {ece:.3f}" if ece is not None else title)
        _counts(bottom, bins)
    figure.suptitle(
        f"Reliability on {numbers.get('rows')} {numbers.get('split', 'validation')} rows "
        f"({numbers.get('mc_samples')} MC samples)"
    )
    return figure


def _diagram(ax: Axes, bins: list[dict[str, Any]]) -> None:
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = finite([b["accuracy"] for b in bins])
    confidence = finite([b["confidence"] for b in bins])
    ax.bar(centres, accuracy, width=width * 0.95, color="tab:blue", alpha=0.8, label="accuracy")
    # the gap between accuracy and mean confidence, hatched so the bar under it stays visible
    ax.bar(
        centres,
        np.abs(np.subtract(accuracy, confidence)),
        bottom=np.fmin(accuracy, confidence),
        width=width * 0.95,
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        linewidth=0.8,
        label="gap to mean confidence",
    )
    ax.scatter(centres, confidence, marker="_", s=200, color="black", label="mean confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.3", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _counts(ax: Axes, bins: list[dict[str, Any]]) -> None:
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    counts = [b["count"] for b in bins]
    ax.bar(centres, counts, width=width * 0.95, color="0.5")
    for x, count in zip(centres, counts, strict=True):
        if count:
            ax.text(x, count, str(count), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, max(max(counts), 1) * 1.3)
    ax.set_xlabel("confidence")
    ax.set_ylabel("rows")


def _coverage(numbers: dict[str, Any]) -> Figure:
    figure = new_figure(7.0, 6.0)
    ax = figure.subplots()
    levels = [c["level"] for c in numbers["coverage"]]
    coverage = [c["coverage"] for c in numbers["coverage"]]
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.3", label="perfect coverage")
    ax.plot(levels, coverage, marker="o", color="tab:blue", label="MC Dropout")
    for x, y in zip(levels, coverage, strict=True):
        ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(-8, 8), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal central interval")
    ax.set_ylabel("share of targets inside")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    rmse = (numbers.get("mc_dropout") or {}).get("rmse")
    rows = numbers.get("rows")
    ax.set_title(f"Interval coverage on {rows} validation rows (MC RMSE {rmse:.3g})")
    return figure


def entropy_histogram(numbers: dict[str, Any]) -> Figure:
    """Histogram of every row's predictive entropy (classifiers) or mean std (regression)."""
    values = np.asarray(numbers["values"], dtype=np.float64)
    values = values[np.isfinite(values)]
    classifier = numbers["measure"] == "predictive_entropy"
    figure = new_figure(9.0, 5.5)
    ax = figure.subplots()
    ax.hist(values, bins=40, color="tab:blue")
    for q, style in ((0.5, "--"), (0.9, ":")):
        if len(values):
            x = float(np.quantile(values, q))
            ax.axvline(
                x, color="tab:red", linestyle=style, label=f"{int(q * 100)}% quantile {x:.3g}"
            )
    if classifier and numbers.get("n_classes"):
        ax.axvline(math.log(numbers["n_classes"]), color="0.3", label="maximum (uniform)")
    ax.set_xlabel("predictive entropy (nats)" if classifier else "std of the MC draws")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    how = f"{numbers['mc_samples']} MC samples" if numbers["mc_samples"] else "plain predictions"
    ax.set_title(
        f"{'Predictive entropy' if classifier else 'Spread'} of {len(values)} rows ({how})"
    )
    return figure


def uncertain_rows(numbers: dict[str, Any]) -> Figure:
    """The most uncertain rows, each with its mean (± std under MC) per class or output."""
    records: list[dict[str, Any]] = numbers["records"]
    if numbers["measure"] != "predictive_entropy":
        return _uncertain_regression(records, numbers["mc_samples"])
    cols = 4
    rows = max(1, math.ceil(len(records) / cols))
    figure = new_figure(13.0, 2.6 * rows + 0.8)
    axes = figure.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, record in zip(axes, records, strict=False):
        mean = finite(record.get("mean") or record.get("prediction") or [])
        std = finite(record["std"]) if record.get("std") else None
        positions = range(len(mean))
        colours = ["tab:red" if i == record.get("class") else "tab:blue" for i in positions]
        ax.bar(positions, mean, yerr=std, color=colours, capsize=2)
        ax.set_ylim(0, 1)
        ax.set_xticks(positions, [str(i) for i in positions], fontsize=7)
        ax.set_title(f"row {record['row']}, H {record['predictive_entropy']:.2f}", fontsize=9)
    for ax in axes[len(records) :]:
        ax.set_axis_off()
    spread = "mean ± std" if numbers["mc_samples"] else "plain probabilities"
    figure.suptitle(f"The {len(records)} most uncertain rows: {spread} per class (red: argmax)")
    return figure


def _uncertain_regression(records: list[dict[str, Any]], mc_samples: int) -> Figure:
    figure = new_figure(9.0, max(4.0, 0.4 * len(records) + 1.5))
    ax = figure.subplots()
    outputs = len(records[0]["mean"]) if records else 0
    for k in range(outputs):
        means = [r["mean"][k] for r in records]
        stds = [r["std"][k] for r in records]
        offsets = [i + (k - (outputs - 1) / 2) * 0.8 / max(outputs, 1) for i in range(len(records))]
        ax.errorbar(means, offsets, xerr=stds, fmt="o", capsize=3, label=f"output {k}")
    ax.set_yticks(range(len(records)), [f"row {r['row']}" for r in records], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean ± std of the MC draws")
    if outputs > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"The {len(records)} most uncertain rows ({mc_samples} MC samples)")
    return figure
