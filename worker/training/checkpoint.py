"""Per-epoch checkpoints of a training job, so a job whose worker dies resumes, not restarts.

Each checkpoint holds the model with its optimizer state (weights, moments, step count, hence
the schedule's position), the epoch reached, the history, and the state of the callbacks that
carry some (early stopping's best, the plateau schedule's patience, pruning's step and masks).
Files are written first, then `checkpoint.json` pointing at them, so a torn write is never
read.
"""

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from service.storage import ArtifactStore


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose progress survives a restart (Keras resets it in on_train_begin)."""

    resume: dict[str, Any] | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        if self.resume:
            self.wait, self.best = self.resume["wait"], self.resume["best"]
            self.best_epoch = self.resume["best_epoch"]
            self.best_weights = self.resume.get("best_weights")
            self.resume = None

    def state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        best = None if self.best is None else float(self.best)
        weights = [np.asarray(w) for w in self.best_weights] if self.best_weights else []
        return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}, weights


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    resume: dict[str, Any] | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        if self.resume:
            self.wait, self.best = self.resume["wait"], self.resume["best"]
            self.cooldown_counter = self.resume["cooldown_counter"]
            self.resume = None

    def state(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "best": float(self.best),
            "cooldown_counter": self.cooldown_counter,
        }


class Checkpoints:
    """Reads and writes the checkpoint of one job in the artifact store."""

    def __init__(self, store: ArtifactStore, job_id: str) -> None:
        self.store = store
        self.prefix = f"jobs/{job_id}"

    def load(self) -> dict[str, Any] | None:
        key = f"{self.prefix}/checkpoint.json"
        if not self.store.exists(key):
            return None
        state: dict[str, Any] = json.loads(self.store.read_bytes(key))
        with self.store.local_file(state["arrays"]) as path:
            with np.load(path, allow_pickle=False) as arrays:
                state["arrays"] = {name: arrays[name] for name in arrays.files}
        return state

    def load_model(self, state: dict[str, Any]) -> keras.Model:
        with self.store.local_file(state["model"]) as path:
            model = keras.saving.load_model(path, safe_mode=True)
        return model

    def save(
        self, model: keras.Model, state: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None:
        tag = f"e{state['epoch']:05d}-b{state.get('batches', 0)}"
        model_key = f"{self.prefix}/ckpt-{tag}.keras"
        arrays_key = f"{self.prefix}/ckpt-{tag}.npz"
        previous = self.load_keys()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            self.store.put_file(model_key, path)
            npz = Path(tmp) / "arrays.npz"
            np.savez(npz, **arrays)  # type: ignore[arg-type]
            self.store.put_file(arrays_key, npz)
        body = {**state, "model": model_key, "arrays": arrays_key}
        self.store.put_bytes(f"{self.prefix}/checkpoint.json", json.dumps(body).encode())
        for key in previous:
            if key not in (model_key, arrays_key):
                self.store.delete(key)

    def load_keys(self) -> list[str]:
        key = f"{self.prefix}/checkpoint.json"
        if not self.store.exists(key):
            return []
        state = json.loads(self.store.read_bytes(key))
        return [state["model"], state["arrays"]]

    def clear(self) -> None:
        for key in self.load_keys():
            self.store.delete(key)
        self.store.delete(f"{self.prefix}/checkpoint.json")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at each epoch end (last in the list: after every state change)."""

    def __init__(self, save: Any) -> None:
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if math.isfinite(float((logs or {}).get("loss", 0.0))):  # never keep a diverged state
            self.save(epoch + 1)


def restore_callbacks(resume: dict[str, Any], early_stopping: Any, pruning: Any) -> None:
    """Hand a checkpoint's callback state to the callbacks of the resumed job."""
    arrays = resume["arrays"]
    if early_stopping is not None and "early_stopping" in resume:
        state = dict(resume["early_stopping"])
        best = [arrays[f"best_{i}"] for i in range(len(arrays)) if f"best_{i}" in arrays]
        state["best_weights"] = best or None
        early_stopping.resume = state
    if pruning is not None and "pruning" in resume:
        pruning.step = int(resume["pruning"]["step"])
        pruning.mask_sparsity = float(resume["pruning"]["mask_sparsity"])
        masks = [arrays[f"mask_{i}"] for i in range(len(arrays)) if f"mask_{i}" in arrays]
        pruning.resume_masks = masks or None
