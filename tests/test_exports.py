"""Artifact formats: .keras, SavedModel (plain and MC signatures) and TFLite, each predicts."""

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


@pytest.fixture
def model_id(client: TestClient, ctx: WorkerContext) -> str:
    job_id = submit(client, make_spec(epochs=2))
    assert run_job(ctx, job_id) == "succeeded"
    return str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


def test_saved_model_serves_plain_and_mc_with_tensorflow_alone(
    client: TestClient, model_id: str, tmp_path: Path
) -> None:
    r = client.get(f"/v1/models/{model_id}/artifact", params={"format": "saved_model"})
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert "saved_model.pb" in zf.namelist()
        zf.extractall(tmp_path / "sm")
    X = load_builtin("digits").X[:3]
    np.save(tmp_path / "x.npy", X)
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(tmp_path / "sm")!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        plain = m.signatures["serve"](x=x)["output_0"].numpy()
        mc = m.signatures["mc_dropout"](x=x)
        np.save({str(tmp_path / "plain.npy")!r}, plain)
        np.save({str(tmp_path / "mean.npy")!r}, mc["mean"].numpy())
        np.save({str(tmp_path / "std.npy")!r}, mc["std"].numpy())
        print(sorted(m.signatures))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mc_dropout" in out.stdout and "serve" in out.stdout
    api = client.post(f"/v1/models/{model_id}/predict", json={"instances": X.tolist()}).json()
    assert np.allclose(np.load(tmp_path / "plain.npy"), api["predictions"], atol=1e-5)
    mean, std = np.load(tmp_path / "mean.npy"), np.load(tmp_path / "std.npy")
    assert mean.shape == std.shape == (3, 10) and std.max() > 0
    assert np.allclose(mean.sum(axis=1), 1, atol=1e-4)


@pytest.mark.parametrize(
    ("quantize", "tolerance"), [(None, 1e-5), ("float16", 1e-2), ("int8", 0.15)]
)
def test_tflite_exports_predict(
    client: TestClient, model_id: str, quantize: str | None, tolerance: float
) -> None:
    import tensorflow as tf

    params = {"format": "tflite", **({"quantize": quantize} if quantize else {})}
    r = client.get(f"/v1/models/{model_id}/artifact", params=params)
    assert r.status_code == 200, r.text
    interpreter = tf.lite.Interpreter(model_content=r.content)
    interpreter.allocate_tensors()
    X = load_builtin("digits").X[:1].astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], X)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    api = client.post(f"/v1/models/{model_id}/predict", json={"instances": X.tolist()}).json()
    assert np.abs(out - np.asarray(api["predictions"])).max() <= tolerance
    again = client.get(f"/v1/models/{model_id}/artifact", params=params)
    assert again.content == r.content  # made once, then served from the artifact store


def test_keras_artifact_and_bad_formats(client: TestClient, model_id: str) -> None:
    r = client.get(f"/v1/models/{model_id}/artifact")
    assert r.status_code == 200 and r.content[:2] == b"PK"
    assert (
        client.get(f"/v1/models/{model_id}/artifact", params={"format": "onnx"}).status_code == 422
    )
    bad = client.get(f"/v1/models/{model_id}/artifact", params={"quantize": "int8"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"] == ["quantize"]
