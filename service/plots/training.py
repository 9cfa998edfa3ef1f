"""Plots of a training job: learning curves, and gradient health from its diagnostics."""

import math
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from service.plots.figures import finite, new_figure, note

NOT_METRICS = ("learning_rate", "momentum", "epoch_seconds")  # as worker/training/fitting.py


def _epoch_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def _mark_phases(ax: Axes, phases: list[dict[str, Any]], label: bool) -> None:
    """Shade every other phase and name each at the top (transfer learning: frozen or not)."""
    start = 0
    for i, phase in enumerate(phases):
        end = start + int(phase["epochs"])
        if i % 2:
            ax.axvspan(start + 0.5, end + 0.5, color="0.9", zorder=0)
        if i:
            ax.axvline(start + 0.5, color="0.5", linestyle=":", linewidth=1)
        if label:
            ax.text(
                (start + end + 1) / 2,
                1.01,
                phase["label"],
                ha="center",
                va="bottom",
                fontsize=8,
                transform=ax.get_xaxis_transform(),
            )
        start = end


def _rate_panel(ax: Axes, history: dict[str, list[Any]], epochs: list[int]) -> None:
    rate = finite(history["learning_rate"])
    ax.plot(epochs[: len(rate)], rate, color="tab:purple", marker=".", label="learning rate")
    positive = [r for r in rate if r > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate" + (" and momentum" if "momentum" in history else ""))
    if "momentum" in history:
        twin = ax.twinx()
        momentum = finite(history["momentum"])
        twin.plot(epochs[: len(momentum)], momentum, color="tab:orange", marker=".")
        twin.set_ylabel("momentum", color="tab:orange")
    _epoch_axis(ax)


def learning_curves(numbers: dict[str, Any]) -> Figure:
    """Loss and each metric, train and validation, then the learning rate (and momentum)."""
    history: dict[str, list[Any]] = numbers["history"]
    metrics = [k for k in history if not k.startswith("val_") and k not in NOT_METRICS]
    metrics.sort(key=lambda k: (k != "loss", k))
    panels = len(metrics) + ("learning_rate" in history)
    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    figure = new_figure(11.0, 3.6 * rows + 0.6)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    for ax, metric in zip(axes, metrics, strict=False):
        train = finite(history[metric])
        ax.plot(epochs[: len(train)], train, marker=".", label="train")
        if f"val_{metric}" in history:
            val = finite(history[f"val_{metric}"])
            ax.plot(epochs[: len(val)], val, marker=".", label="validation")
        ax.set_title(metric)
        ax.legend(fontsize=8)
        _epoch_axis(ax)
    if "learning_rate" in history:
        _rate_panel(axes[len(metrics)], history, epochs)
    for ax in axes[panels:]:
        ax.set_axis_off()
    for i, ax in enumerate(axes[:panels]):
        _mark_phases(ax, numbers["phases"], label=i < cols)
    figure.suptitle(f"Learning curves: {numbers['name']} ({len(epochs)} epochs)")
    return figure


def _matrix(epochs: list[dict[str, Any]], layers: list[str], field: str) -> np.ndarray:
    """layers x epochs of one layer statistic; NaN where it is null or the layer is absent."""
    out = np.full((len(layers), len(epochs)), np.nan)
    row_of = {name: i for i, name in enumerate(layers)}
    for j, epoch in enumerate(epochs):
        for record in epoch["layers"]:
            value = record.get(field)
            if record["name"] in row_of and value is not None:
                out[row_of[record["name"]], j] = value
    return out


def _layer_axes(ax: Axes, layers: list[str], epochs: list[dict[str, Any]]) -> None:
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    step = max(1, math.ceil(len(epochs) / 20))
    ticks = list(range(0, len(epochs), step))
    ax.set_xticks(ticks, [str(epochs[j]["epoch"]) for j in ticks])
    ax.set_xlabel("epoch")


def _mark_flags(ax: Axes, epochs: list[dict[str, Any]], non_finite: np.ndarray) -> list[str]:
    """Vanishing (V) or exploding (E) above the epochs flagged; x on a non-finite gradient."""
    seen = []
    for j, epoch in enumerate(epochs):
        for flag in epoch.get("flags") or []:
            exploding = flag["code"] == "exploding_gradients"
            ax.text(
                j,
                1.01,
                "E" if exploding else "V",
                color="tab:red" if exploding else "tab:blue",
                fontweight="bold",
                ha="center",
                va="bottom",
                transform=ax.get_xaxis_transform(),
            )
            seen.append(flag["code"])
    rows, cols = np.nonzero(non_finite)
    if len(rows):
        ax.scatter(cols, rows, marker="x", color="tab:red", s=60, label="not finite")
        ax.legend(loc="upper right", fontsize=8)
    return sorted(set(seen))


def gradient_health(numbers: dict[str, Any]) -> Figure:
    """Layer x epoch heat map of gradient norms on a log colour scale, flags marked."""
    epochs: list[dict[str, Any]] = numbers["epochs"]
    last = epochs[-1]["layers"]
    layers = [
        r["name"]
        for r in last
        if r.get("gradient_norm") is not None or not r.get("gradient_finite", True)
    ]
    figure = new_figure(10.0, max(4.0, 0.45 * len(layers) + 2.0))
    ax = figure.subplots()
    norms = _matrix(epochs, layers, "gradient_norm")
    positive = norms[np.isfinite(norms) & (norms > 0)]
    if not layers or not len(positive):
        note(ax, "No layer with weights has a recorded gradient norm yet.")
        return figure
    shown = np.ma.masked_where(~(np.isfinite(norms) & (norms > 0)), norms)
    image = ax.imshow(
        shown,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        norm=LogNorm(
            vmin=float(positive.min()), vmax=float(max(positive.max(), positive.min() * 10))
        ),
    )
    figure.colorbar(image, ax=ax, label="gradient norm (log scale)")
    finite_flags = _matrix(epochs, layers, "gradient_finite")
    codes = _mark_flags(ax, epochs, finite_flags == 0)
    _layer_axes(ax, layers, epochs)
    ax.set_ylabel("layer (input at the top)")
    flagged = ", ".join(c.replace("_", " ") for c in codes) if codes else "no flags"
    figure.suptitle(f"Gradient norms per layer and epoch ({flagged}; V vanishing, E exploding)")
    return figure


def _fraction_layers(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(layer, field) for each layer that can saturate (sigmoid, tanh) or die (ReLU)."""
    out = []
    for r in records:
        for field in ("saturated_fraction", "dead_fraction"):
            if r.get(field) is not None:
                out.append((r["name"], field))
    return out


def activation_saturation(numbers: dict[str, Any]) -> Figure:
    """Saturated (sigmoid, tanh) and dead (ReLU) fractions per layer: the last epoch as bars,
    every epoch as a heat map; activation mean and spread when no layer can saturate."""
    epochs: list[dict[str, Any]] = numbers["epochs"]
    last = epochs[-1]["layers"]
    pairs = _fraction_layers(last)
    figure = new_figure(12.0, max(4.0, 0.45 * max(len(pairs), len(last)) + 2.0))
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.4])
    if not pairs:
        _activation_spread(left, last)
        note(right, "No sigmoid, tanh or ReLU layer: nothing can saturate or die.")
    else:
        _fraction_bars(left, pairs, last, epochs[-1]["epoch"])
        _fraction_map(figure, right, pairs, epochs)
    figure.suptitle("Activation saturation per layer")
    return figure


def _fraction_bars(
    ax: Axes, pairs: list[tuple[str, str]], last: list[dict[str, Any]], epoch: int
) -> None:
    by_name = {r["name"]: r for r in last}
    values = [by_name[name][field] for name, field in pairs]
    colours = ["tab:orange" if f == "saturated_fraction" else "tab:gray" for _, f in pairs]
    positions = range(len(pairs))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, [_label(name, field) for name, field in pairs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of units")
    ax.set_title(f"epoch {epoch}")
    ax.grid(axis="x", alpha=0.3)


def _fraction_map(
    figure: Figure, ax: Axes, pairs: list[tuple[str, str]], epochs: list[dict[str, Any]]
) -> None:
    matrix = np.full((len(pairs), len(epochs)), np.nan)
    for j, epoch in enumerate(epochs):
        by_name = {r["name"]: r for r in epoch["layers"]}
        for i, (name, field) in enumerate(pairs):
            value = by_name.get(name, {}).get(field)
            matrix[i, j] = np.nan if value is None else value
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="fraction of units")
    _layer_axes(ax, [_label(n, f) for n, f in pairs], epochs)
    ax.set_title("per epoch")


def _label(name: str, field: str) -> str:
    return f"{name} ({'saturated' if field == 'saturated_fraction' else 'dead'})"


def _activation_spread(ax: Axes, last: list[dict[str, Any]]) -> None:
    names = [r["name"] for r in last]
    means = finite([r.get("activation_mean") for r in last])
    stds = finite([r.get("activation_std") for r in last])
    positions = range(len(names))
    ax.errorbar(means, positions, xerr=stds, fmt="o", capsize=3)
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("activation mean ± std (last epoch)")
    ax.grid(axis="x", alpha=0.3)
