"""Uncertainty quality, measured on the validation rows: plain predictions against MC Dropout.

Classification: accuracy, negative log-likelihood, Brier score (summed over classes) and
expected calibration error over equal-width confidence bins (15 by default), with the bins
themselves stored under `reliability` (the ECE is computed from them, so the two agree).
Regression: RMSE; for MC also the Gaussian NLL, the empirical coverage of the central 90%
interval of the samples, and under `coverage` that of several central intervals.
"""

from typing import Any

import numpy as np

from inference.sampler import Predictor

EPS = 1e-12
ECE_BINS = 15  # the spec's uncertainty.bins default
COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)  # nominal central intervals checked for regression


def _as_probabilities(p: np.ndarray) -> np.ndarray:
    return np.concatenate([1 - p, p], axis=-1) if p.shape[-1] == 1 else p


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per equal-width confidence bin (low, high]: rows, mean confidence, accuracy (or null)."""
    probs = _as_probabilities(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds low < confidence <= high; a confidence is never 0 (it is the largest of >= 2)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        in_bin = index == i
        count = int(in_bin.sum())
        out.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "count": count,
                "confidence": float(confidence[in_bin].mean()) if count else None,
                "accuracy": float(correct[in_bin].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(bins: list[dict[str, Any]]) -> float:
    """ECE from reliability bins: the count-weighted gap between accuracy and confidence."""
    n = sum(b["count"] for b in bins)
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def classification_scores(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, float]:
    probs = _as_probabilities(probs)
    n, k = probs.shape
    onehot = np.eye(k)[labels]
    correct = probs.argmax(axis=1) == labels
    return {
        "accuracy": float(correct.mean()),
        "nll": float(-np.log(np.clip(probs[np.arange(n), labels], EPS, 1.0)).mean()),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "ece": float(expected_calibration_error(reliability_bins(probs, labels, bins))),
    }


def interval_coverage(
    draws: np.ndarray, y: np.ndarray, levels: tuple[float, ...] = COVERAGE_LEVELS
) -> list[dict[str, float]]:
    """Share of targets inside the central interval of the draws, per nominal level."""
    y = y.reshape(len(y), -1)
    out = []
    for level in levels:
        low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out.append({"level": level, "coverage": float(((y >= low) & (y <= high)).mean())})
    return out


def regression_scores(draws: np.ndarray, y: np.ndarray) -> dict[str, float]:
    y = y.reshape(len(y), -1)
    mean, std = draws.mean(axis=0), np.maximum(draws.std(axis=0), 1e-6)
    nll = 0.5 * np.log(2 * np.pi * std**2) + (y - mean) ** 2 / (2 * std**2)
    low, high = np.quantile(draws, [0.05, 0.95], axis=0)
    return {
        "rmse": float(np.sqrt(((mean - y) ** 2).mean())),
        "nll": float(nll.mean()),
        "coverage_90": float(((y >= low) & (y <= high)).mean()),
    }


def measure(
    predictor: Predictor,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    mc_samples: int,
    seed: int | None,
    bins: int = ECE_BINS,
) -> dict[str, Any]:
    """The `uncertainty` object stored with a model that has dropout layers."""
    plain = predictor.predict(X_val).astype(np.float64)
    draws = predictor.sample(X_val, mc_samples, seed).astype(np.float64)
    result: dict[str, Any] = {
        "split": "validation",
        "mc_samples": mc_samples,
        "rows": int(len(X_val)),
    }
    if task == "classification":
        labels = y_val.argmax(axis=1) if y_val.ndim == 2 else y_val.astype(np.int64)
        mc_mean = draws.mean(axis=0)
        result["plain"] = classification_scores(plain, labels, bins)
        result["mc_dropout"] = classification_scores(mc_mean, labels, bins)
        result["reliability"] = {
            "plain": reliability_bins(plain, labels, bins),
            "mc_dropout": reliability_bins(mc_mean, labels, bins),
        }
    else:
        y = y_val.reshape(len(y_val), -1)
        result["plain"] = {"rmse": float(np.sqrt(((plain - y) ** 2).mean()))}
        result["mc_dropout"] = regression_scores(draws, y_val)
        result["coverage"] = interval_coverage(draws, y_val)
    return result
