"""The answer of /predict as numpy arrays."""

from dataclasses import dataclass
from typing import Any

import numpy as np


def _floats(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # null (a non-finite output) becomes NaN


@dataclass(frozen=True)
class Prediction:
    """Per row: `mean` (the plain outputs when mc_samples is 0) and, with Monte-Carlo
    Dropout, `std`, `classes` and `class_name` (its label, when the model has names),
    `predictive_entropy`, `mutual_information` (classifiers),
    `samples` (rows, mc_samples, outputs) and `lower`/`upper` (regression intervals)."""

    model_id: str
    mc_samples: int
    mean: np.ndarray
    std: np.ndarray | None = None
    classes: np.ndarray | None = None
    class_name: np.ndarray | None = None
    predictive_entropy: np.ndarray | None = None
    mutual_information: np.ndarray | None = None
    samples: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    interval: float | None = None

    def __len__(self) -> int:
        return len(self.mean)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Prediction":
        """Read the JSON answer of /predict."""
        rows = body["predictions"]
        model_id, mc_samples = str(body["model_id"]), int(body["mc_samples"])
        if mc_samples == 0:
            return cls(model_id, mc_samples, mean=_floats(rows))
        first = rows[0] if rows else {}

        def column(key: str) -> np.ndarray | None:
            return _floats([r[key] for r in rows]) if key in first else None

        interval = first.get("interval")
        return cls(
            model_id,
            mc_samples,
            mean=_floats([r["mean"] for r in rows]),
            std=column("std"),
            classes=np.array([r["class"] for r in rows], dtype=np.int64)
            if "class" in first
            else None,
            class_name=np.array([r.get("class_name") for r in rows], dtype=object)
            if "class_name" in first
            else None,
            predictive_entropy=column("predictive_entropy"),
            mutual_information=column("mutual_information"),
            samples=column("samples"),
            lower=_floats([r["interval"]["lower"] for r in rows]) if interval else None,
            upper=_floats([r["interval"]["upper"] for r in rows]) if interval else None,
            interval=float(interval["level"]) if interval else None,
        )
