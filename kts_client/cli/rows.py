"""Rows in (.csv with a header, .npy) and predictions out (table, CSV, Parquet, JSON)."""

import csv
from pathlib import Path
from typing import Any

import numpy as np

from kts_client.prediction import Prediction


def read_rows(path: Path) -> np.ndarray:
    """Rows from a .npy file, or a .csv with a header row and numbers only."""
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"Expected rows in a .csv or .npy file. Received: {path.name}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        try:
            rows = [[float(v) for v in row] for row in reader if row]
        except ValueError:
            raise ValueError(f"Expected numbers only in the rows of {path.name}.") from None
    if not rows:
        raise ValueError(f"Expected at least one row in {path.name}.")
    return np.asarray(rows, dtype=np.float64)


def columns(pred: Prediction) -> dict[str, np.ndarray]:
    """One flat column per measure and output: row, class, entropies, mean_0, std_0, ..."""
    out: dict[str, np.ndarray] = {"row": np.arange(len(pred))}
    for name in ("classes", "class_name", "predictive_entropy", "mutual_information"):
        value = getattr(pred, name)
        if value is not None:
            out["class" if name == "classes" else name] = value
    for name in ("mean", "std", "lower", "upper"):
        value = getattr(pred, name)
        if value is not None:
            flat = value.reshape(len(value), -1)
            out.update({f"{name}_{i}": flat[:, i] for i in range(flat.shape[1])})
    return out


def write_predictions(pred: Prediction, path: Path) -> None:
    """Write the columns as .csv or .parquet (by the file's suffix)."""
    cols = columns(pred)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    elif suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(cols)
            writer.writerows(zip(*(c.tolist() for c in cols.values()), strict=True))
    else:
        raise ValueError(f"Expected --out ending in .csv or .parquet. Received: {path.name}")


def as_json(pred: Prediction) -> dict[str, Any]:
    """The prediction's arrays as lists."""
    out: dict[str, Any] = {"model_id": pred.model_id, "mc_samples": pred.mc_samples}
    for name, value in vars(pred).items():
        if isinstance(value, np.ndarray):
            out[name] = value.tolist()
    if pred.interval is not None:
        out["interval"] = pred.interval
    return out


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _label(pred: Prediction, row: int, c: int, class_names: list[str] | None) -> str | None:
    if pred.class_name is not None:
        return None if pred.class_name[row] is None else str(pred.class_name[row])
    return class_names[c] if class_names and 0 <= c < len(class_names) else None


def classifier_rows(
    pred: Prediction, class_names: list[str] | None
) -> tuple[list[str], list[list[str]]]:
    """Per row: the class, its probability (± std under MC Dropout) and the uncertainties."""
    classes = pred.classes if pred.classes is not None else pred.mean.argmax(axis=1)
    head = ["row", "class", "p ± std" if pred.std is not None else "p"]
    extra = [
        m for m in ("predictive_entropy", "mutual_information") if getattr(pred, m) is not None
    ]
    rows = []
    for i, c in enumerate(classes.tolist()):
        std = None if pred.std is None else float(pred.std[i, c])
        name = _label(pred, i, c, class_names)
        label = f"{c} ({name})" if name not in (None, str(c)) else str(c)
        cells = [str(i), label, _pm(float(pred.mean[i, c]), std)]
        rows.append(cells + [f"{getattr(pred, m)[i]:.4f}" for m in extra])
    return head + [m.replace("_", " ") for m in extra], rows


def output_rows(pred: Prediction) -> tuple[list[str], list[list[str]]]:
    """Per row and output: mean ± std, with the interval when asked for."""
    mean = pred.mean.reshape(len(pred), -1)
    std = None if pred.std is None else pred.std.reshape(len(pred), -1)
    lower = None if pred.lower is None else pred.lower.reshape(len(pred), -1)
    upper = None if pred.upper is None else pred.upper.reshape(len(pred), -1)
    rows = []
    for i in range(len(pred)):
        cells = [str(i)]
        for j in range(mean.shape[1]):
            text = _pm(float(mean[i, j]), None if std is None else float(std[i, j]))
            if lower is not None and upper is not None:
                text += f" [{lower[i, j]:.4f}, {upper[i, j]:.4f}]"
            cells.append(text)
        rows.append(cells)
    label = "mean ± std" if std is not None else "output"
    return ["row", *(f"{label} {j}" for j in range(mean.shape[1]))], rows
