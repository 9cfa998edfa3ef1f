"""Exports of a stored model: a SavedModel with a plain and an MC-Dropout serving signature,
and TFLite flatbuffers (float32, float16 or int8 weights).

Both formats are TensorFlow's, so they are written by a process on the TensorFlow backend: this
one when it runs TensorFlow, else a child process (`python -m inference.exports`) that loads
the .keras file (trained under any backend) with TensorFlow.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras

from inference.sampler import Predictor

MC_SAMPLES = 100  # draws per row behind the SavedModel's mc_dropout signature


class ExportUnavailable(Exception):
    pass


NEEDS_TF = (
    "SavedModel and TFLite exports need TensorFlow: pip install 'keras-training-service[tf]'."
)


def _tf() -> Any:
    if keras.backend.backend() != "tensorflow":
        raise ExportUnavailable("SavedModel and TFLite exports need the TensorFlow backend.")
    import tensorflow as tf

    return tf


def export_file(model_path: Path, task: str, fmt: str, quantize: str | None, target: Path) -> None:
    """Write the export of a stored .keras file, on the TensorFlow backend whatever this
    process runs."""
    if keras.backend.backend() == "tensorflow":
        _export(Predictor.load(model_path, task), fmt, quantize, target)
        return
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise ExportUnavailable(NEEDS_TF)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "KTS_BACKEND": "tensorflow"}
    command = [sys.executable, "-m", "inference.exports", str(model_path), task, fmt, str(target)]
    if quantize:
        command += ["--quantize", quantize]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"export failed: {done.stderr[-2000:]}")


def _export(predictor: Predictor, fmt: str, quantize: str | None, target: Path) -> None:
    if fmt == "saved_model":
        saved_model_zip(predictor, target)
    else:
        tflite(predictor, target, quantize)


def saved_model_zip(predictor: Predictor, target: Path) -> None:
    """Write a .zip whose entries are a SavedModel directory (saved_model.pb included).

    Signatures: `serve` (plain predictions, also `serving_default`) and, for a model with
    dropout, `mc_dropout` ({"mean", "std"} of 100 Monte-Carlo samples per row), so TensorFlow
    Serving can answer with uncertainty too.
    """
    tf = _tf()
    model = predictor.model
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="x")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
    if predictor.sampler is not None:
        prefix, sampler = predictor.prefix, predictor.sampler
        archive.track(sampler)
        if prefix is not None:
            archive.track(prefix)

        def mc_dropout(x: Any) -> dict[str, Any]:
            h = prefix(x, training=False) if prefix is not None else x
            rows = tf.shape(h)[0]
            tiled = tf.broadcast_to(h[None], tf.concat([[MC_SAMPLES], tf.shape(h)], 0))
            tiled = tf.reshape(tiled, tf.concat([[MC_SAMPLES * rows], tf.shape(h)[1:]], 0))
            draws = tf.reshape(sampler(tiled, training=False), [MC_SAMPLES, rows, -1])
            return {"mean": tf.reduce_mean(draws, 0), "std": tf.math.reduce_std(draws, 0)}

        archive.add_endpoint("mc_dropout", mc_dropout, input_signature=[spec])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "saved_model"
        archive.write_out(str(out), verbose=False)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(out).as_posix())


def tflite(predictor: Predictor, target: Path, quantize: str | None) -> None:
    """A TFLite flatbuffer; `float16` or `int8` (dynamic range) quantize the weights."""
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(predictor.model)
    if quantize in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
    with tempfile.NamedTemporaryFile(delete=False, dir=target.parent) as fh:
        fh.write(converter.convert())
    shutil.move(fh.name, target)


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a stored .keras file (TensorFlow).")
    parser.add_argument("model_path", type=Path)
    parser.add_argument("task")
    parser.add_argument("format", choices=["saved_model", "tflite"])
    parser.add_argument("target", type=Path)
    parser.add_argument("--quantize", choices=["float16", "int8"], default=None)
    args = parser.parse_args()
    _export(Predictor.load(args.model_path, args.task), args.format, args.quantize, args.target)


if __name__ == "__main__":
    main()
