"""Per-row statistics of Monte-Carlo draws: numpy only, shared by /predict and batch scoring."""

from typing import Any

import numpy as np

EPS = 1e-12


def statistics(
    draws: np.ndarray, task: str, interval: float | None = None
) -> dict[str, np.ndarray]:
    """Per-row statistics of MC draws (n, rows, outputs), as columns.

    Every row: mean and std per output. Classifiers: class, predictive entropy (of the mean
    probabilities) and mutual information (entropy minus the mean entropy of the draws).
    Regression with `interval`: the central quantiles of the draws.
    """
    mean, std = draws.mean(axis=0), draws.std(axis=0)
    columns: dict[str, np.ndarray] = {"mean": mean, "std": std}
    if task != "classification":
        if interval is not None:
            columns["lower"], columns["upper"] = np.quantile(
                draws, [(1 - interval) / 2, (1 + interval) / 2], axis=0
            )
        return columns
    if draws.shape[-1] == 1:  # one sigmoid unit: expand to two class probabilities
        draws = np.concatenate([1 - draws, draws], axis=-1)
    probs_mean = draws.mean(axis=0)
    entropy = -(probs_mean * np.log(probs_mean + EPS)).sum(axis=-1)
    expected = -(draws * np.log(draws + EPS)).sum(axis=-1).mean(axis=0)
    columns["class"] = probs_mean.argmax(axis=-1)
    columns["predictive_entropy"] = entropy
    columns["mutual_information"] = np.maximum(entropy - expected, 0.0)
    return columns


def summarise(draws: np.ndarray, task: str, interval: float | None = None) -> list[dict[str, Any]]:
    """The predict answer: one dict per row of `statistics`."""
    columns = statistics(draws, task, interval)
    rows: list[dict[str, Any]] = []
    for i in range(draws.shape[1]):
        row: dict[str, Any] = {
            "mean": columns["mean"][i].tolist(),
            "std": columns["std"][i].tolist(),
        }
        if "class" in columns:
            row["class"] = int(columns["class"][i])
            row["predictive_entropy"] = float(columns["predictive_entropy"][i])
            row["mutual_information"] = float(columns["mutual_information"][i])
        if "lower" in columns:
            row["interval"] = {
                "level": interval,
                "lower": columns["lower"][i].tolist(),
                "upper": columns["upper"][i].tolist(),
            }
        rows.append(row)
    return rows
