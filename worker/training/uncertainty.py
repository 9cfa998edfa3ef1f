"""Uncertainty quality, measured on the validation rows: plain predictions against MC Dropout.

Classification: accuracy, negative log-likelihood, Brier score (summed over classes) and
expected calibration error over 15 equal-width confidence bins. Regression: RMSE; for MC also
the Gaussian NLL and the empirical coverage of the central 90% interval of the samples.
"""

from typing import Any

import numpy as np

from inference.sampler import Predictor

EPS = 1e-12
ECE_BINS = 15  # the spec's uncertainty.bins default


def _as_probabilities(p: np.ndarray) -> np.ndarray:
    return np.concatenate([1 - p, p], axis=-1) if p.shape[-1] == 1 else p


def classification_scores(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, float]:
    probs = _as_probabilities(probs)
    n, k = probs.shape
    onehot = np.eye(k)[labels]
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    ece = 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return {
        "accuracy": float(correct.mean()),
        "nll": float(-np.log(np.clip(probs[np.arange(n), labels], EPS, 1.0)).mean()),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "ece": float(ece),
    }


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
        result["plain"] = classification_scores(plain, labels, bins)
        result["mc_dropout"] = classification_scores(draws.mean(axis=0), labels, bins)
    else:
        y = y_val.reshape(len(y_val), -1)
        result["plain"] = {"rmse": float(np.sqrt(((plain - y) ** 2).mean()))}
        result["mc_dropout"] = regression_scores(draws, y_val)
    return result
