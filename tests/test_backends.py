"""The backend is a setting: a .keras file trained under one backend loads and predicts under
the other, custom objects (RReLU, 1cycle SGD) included."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TRAIN = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from inference.custom_objects import OneCycle, OneCycleSGD, RReLU
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype("int64")
    model = keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
        RReLU(), keras.layers.Dropout(0.2), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=OneCycleSGD(total_steps=16, learning_rate=OneCycle(16, 0.1),
                                        momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=2, batch_size=32, verbose=0)
    model.save(sys.argv[1])
    np.save(sys.argv[2], X[:5])
    print(json.dumps({"backend": keras.backend.backend(),
                      "out": np.asarray(model.predict(X[:5], verbose=0)).tolist()}))
""")
PREDICT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from inference.sampler import Predictor
    p = Predictor.load(sys.argv[1], "classification")
    X = np.load(sys.argv[2])
    mc = p.sample(X, 20, 1)
    print(json.dumps({"backend": keras.backend.backend(), "out": p.predict(X).tolist(),
                      "mc_std": float(mc.std(axis=0).max())}))
""")


def _run(code: str, backend: str, *args: str) -> dict:
    if backend == "tensorflow" and not _has("tensorflow") or backend == "jax" and not _has("jax"):
        pytest.skip(f"the {backend} backend is not installed")
    env = {**os.environ, "KTS_BACKEND": backend, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    ("trained_on", "loaded_on"), [("tensorflow", "jax"), ("jax", "tensorflow")]
)
def test_a_model_trained_under_one_backend_predicts_under_the_other(
    tmp_path: Path, trained_on: str, loaded_on: str
) -> None:
    path, rows = str(tmp_path / "model.keras"), str(tmp_path / "rows.npy")
    trained = _run(TRAIN, trained_on, path, rows)
    loaded = _run(PREDICT, loaded_on, path, rows)
    assert (trained["backend"], loaded["backend"]) == (trained_on, loaded_on)
    assert np.allclose(trained["out"], loaded["out"], atol=1e-5)
    assert loaded["mc_std"] > 0  # the dropout layer is sampled after the round trip


def test_the_default_backend_is_jax_whatever_keras_json_says(tmp_path: Path) -> None:
    """Keras alone would take ~/.keras/keras.json's backend (TensorFlow when it wrote the file
    itself); the service's processes take KTS_BACKEND, else KERAS_BACKEND, else JAX."""
    if not _has("jax"):
        pytest.skip("jax is not installed")
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)
    (home / ".keras" / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {k: v for k, v in os.environ.items() if k not in ("KTS_BACKEND", "KERAS_BACKEND")}
    code = "import inference.sampler, worker.build.layers, keras; print(keras.backend.backend())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "jax"
