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
    for name in ("classes", "predictive_entropy", "mutual_information"):
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


def cells(pred: Prediction, row: int) -> list[str]:
    """One row of the table: class and entropies, then mean ± std per output."""
    out = []
    if pred.classes is not None:
        out.append(str(pred.classes[row]))
    for measure in (pred.predictive_entropy, pred.mutual_information):
        if measure is not None:
            out.append(f"{measure[row]:.4f}")
    mean = pred.mean[row].reshape(-1)
    std = None if pred.std is None else pred.std[row].reshape(-1)
    for i, m in enumerate(mean):
        text = f"{m:.4f}" if std is None else f"{m:.4f} ± {std[i]:.4f}"
        if pred.lower is not None and pred.upper is not None:
            text += f" [{pred.lower[row].reshape(-1)[i]:.4f}, {pred.upper[row].reshape(-1)[i]:.4f}]"
        out.append(text)
    return out


def headers(pred: Prediction) -> list[str]:
    """The table's column names, matching `cells`."""
    out = ["row"]
    out += ["class"] if pred.classes is not None else []
    out += ["entropy"] if pred.predictive_entropy is not None else []
    out += ["mutual info"] if pred.mutual_information is not None else []
    outputs = int(np.prod(pred.mean.shape[1:])) if pred.mean.ndim > 1 else 1
    label = "mean ± std" if pred.std is not None else "output"
    return out + [f"{label} {i}" for i in range(outputs)]
