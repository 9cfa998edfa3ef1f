"""Plots: the reliability bins stored with a model, and the job, model and batch-prediction
plots served as PNG and SVG, cached in the artifact store, hidden from other tenants."""

import io
import json
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread
from sqlalchemy import update

from service.datasets.arrays import load_builtin
from service.plots import figures, training
from service.plots import service as plots_service
from service.plots import uncertainty as uncertainty_plots
from service.rows import Job
from service.settings import Settings
from service.spec import SPEC_VERSION, TrainingSpec
from tests.conftest import make_spec, submit
from tests.test_batch_predictions import upload
from tests.test_training import upload_regression
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job
from worker.training.uncertainty import (
    classification_scores,
    expected_calibration_error,
    interval_coverage,
    reliability_bins,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JOB_PLOTS = ["learning_curves", "gradient_health", "activation_saturation"]
# dropout (an uncertainty block), tanh (saturation) and ReLU (dead units) in one small MLP
SPEC = make_spec(
    epochs=3,
    uncertainty={"mc_samples": 30, "bins": 10},
    model={
        "layers": [
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 16, "activation": "tanh"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
)
REGRESSION_LAYERS = {
    "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 1},
    ]
}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (the first chunk after the signature)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_png(response: Any) -> bytes:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    data: bytes = response.content
    width, height = png_size(data)
    assert width >= 300 and height >= 300 and len(data) > 5000
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.01  # something is drawn, not a blank canvas
    return data


def assert_svg(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(response.content)
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50


def cached(settings: Settings, folder: str) -> list[Path]:
    return sorted((settings.resolved_artifact_dir() / "plots" / folder).glob("*"))


def trained(client: TestClient, ctx: WorkerContext, spec: dict[str, Any]) -> tuple[str, str]:
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    return job_id, str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


# --- The numbers -----------------------------------------------------------------------------


def test_reliability_bins_give_the_ece() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=500)
    bins = reliability_bins(probs, labels, 12)
    assert len(bins) == 12 and sum(b["count"] for b in bins) == 500
    assert bins[0]["low"] == 0.0 and bins[-1]["high"] == 1.0
    for b in bins:
        if b["count"]:
            assert b["low"] < b["confidence"] <= b["high"] and 0 <= b["accuracy"] <= 1
        else:
            assert b["confidence"] is None and b["accuracy"] is None
    ece = classification_scores(probs, labels, 12)["ece"]
    assert ece == expected_calibration_error(bins) and 0 < ece < 1
    # a confidence on a bin edge belongs to the bin it closes: (low, high]
    edge = reliability_bins(np.array([[0.5, 0.5], [0.2, 0.8]]), np.array([0, 1]), 10)
    assert edge[4]["count"] == 1 and edge[7]["count"] == 1


def test_interval_coverage_follows_the_nominal_levels() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(1000, 400, 1))
    coverage = interval_coverage(draws, rng.normal(size=400))
    assert [c["level"] for c in coverage] == [0.5, 0.8, 0.9, 0.95]
    for c in coverage:
        assert c["coverage"] == pytest.approx(c["level"], abs=0.06)


def test_renderers_draw_phases_momentum_flags_and_no_saturation() -> None:
    """The branches a small real job does not reach: phases, momentum, flags, no fractions."""
    history = {
        "loss": [1.0, 0.7, 0.5, 0.4],
        "val_loss": [1.1, 0.8, None, 0.5],
        "learning_rate": [0.01, 0.1, 0.05, 0.001],
        "momentum": [0.95, 0.85, 0.9, 0.95],
        "epoch_seconds": [1.0, 0.2, 0.2, 0.2],
    }
    phases = [{"epochs": 2, "label": "phase 1: base frozen"}, {"epochs": 2, "label": "phase 2"}]
    figure = training.learning_curves({"name": "t", "history": history, "phases": phases})
    assert len(figure.axes) >= 2 and figure.axes[0].get_title() == "loss"
    assert png_size(figures.encode(figure, "png"))[0] >= 300

    def layer(name: str, grad: float | None, finite: bool = True) -> dict[str, Any]:
        return {
            "name": name,
            "gradient_norm": grad,
            "gradient_finite": finite,
            "activation_mean": 0.1,
            "activation_std": 1.0,
            "saturated_fraction": None,
            "dead_fraction": None,
        }

    flag = {"code": "vanishing_gradients", "epoch": 2, "message": "..."}
    epochs = [
        {"epoch": 1, "layers": [layer("a", 1e-6), layer("b", 1.0)], "flags": []},
        {"epoch": 2, "layers": [layer("a", None, False), layer("b", 2.0)], "flags": [flag]},
    ]
    health = training.gradient_health({"epochs": epochs})
    assert "vanishing gradients" in health.get_suptitle()
    saturation = training.activation_saturation({"epochs": epochs})
    assert "nothing can saturate" in saturation.axes[1].texts[0].get_text()
    for drawn in (health, saturation):
        ET.fromstring(figures.encode(drawn, "svg"))
    coverage = [{"level": 0.5, "coverage": 0.4}, {"level": 0.9, "coverage": 0.85}]
    regression = uncertainty_plots.reliability(
        {"rows": 30, "coverage": coverage, "mc_dropout": {"rmse": 0.3}}
    )
    assert regression.axes[0].get_xlabel() == "nominal central interval"


def test_transfer_phases_are_labelled() -> None:
    spec = json.loads(
        (Path(__file__).parent.parent / "examples/transfer_b_from_a.json").read_text()
    )
    spec["base_model"]["model_id"] = "a" * 32
    stored = TrainingSpec.model_validate(spec).model_dump(mode="json")
    job = Job(kind="train", spec=stored, spec_version=SPEC_VERSION)
    assert plots_service._phases(job) == [
        {"epochs": 4, "label": "phase 1: base frozen"},
        {"epochs": 16, "label": "phase 2: base trainable, lr 0.0001"},
    ]


def test_api_start_does_not_import_matplotlib(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.db import upgrade_database
        from service.settings import Settings
        s = Settings(data_dir={str(tmp_path)!r}, require_auth=False)
        upgrade_database(s.resolved_database_url())
        with TestClient(create_app(s)) as c:
            assert c.get("/v1/jobs").status_code == 200
            assert c.get("/v1/jobs/nope/plots/learning_curves").status_code == 404
        print("MATPLOTLIB", "matplotlib" in sys.modules)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert "MATPLOTLIB False" in out.stdout


# --- Served plots ----------------------------------------------------------------------------


def check_refusals(client: TestClient, job_id: str, model_id: str) -> None:
    """Unknown names are 404 listing what is there; a format other than png or svg is 422."""
    r = client.get(f"/v1/jobs/{job_id}/plots/colour")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "not_found" and "learning_curves" in error["message"]
    assert error["details"] == [{"loc": ["name"], "msg": f"Available now: {', '.join(JOB_PLOTS)}."}]
    r = client.get(f"/v1/models/{model_id}/plots/learning_curves")
    assert r.status_code == 404 and "reliability" in r.json()["error"]["message"]
    for path in (f"/v1/jobs/{job_id}/plots/gradient_health", f"/v1/models/{model_id}/plots/x"):
        r = client.get(path, params={"format": "jpeg"})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["loc"] == ["query", "format"]
    assert client.get("/v1/jobs/unknown/plots/learning_curves").status_code == 404
    assert client.get("/v1/batch-predictions/unknown/plots/uncertain_rows").status_code == 404


def test_job_and_model_plots_of_a_classifier(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    queued = submit(client, SPEC)
    assert client.get(f"/v1/jobs/{queued}").json()["plots"] == []
    r = client.get(f"/v1/jobs/{queued}/plots/learning_curves")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.json()["error"]["details"] == [{"loc": ["name"], "msg": "Available now: none yet."}]
    assert run_job(ctx, queued) == "succeeded"
    job = client.get(f"/v1/jobs/{queued}").json()
    assert job["plots"] == JOB_PLOTS
    for name in JOB_PLOTS:
        assert_png(client.get(f"/v1/jobs/{queued}/plots/{name}"))
        assert_svg(client.get(f"/v1/jobs/{queued}/plots/{name}", params={"format": "svg"}))
    assert {p.suffix for p in cached(settings, f"jobs/{queued}")} == {".png", ".svg"}
    assert len(cached(settings, f"jobs/{queued}")) == 2 * len(JOB_PLOTS)
    before = client.get(f"/v1/jobs/{queued}/plots/learning_curves").content
    grown = {k: [*v, v[-1]] for k, v in job["history"].items()}  # as a worker adds an epoch
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id == queued).values(history=grown))
        session.commit()
    assert assert_png(client.get(f"/v1/jobs/{queued}/plots/learning_curves")) != before
    curves = [p for p in cached(settings, f"jobs/{queued}") if p.match("learning_curves-*.png")]
    assert len(curves) == 1 and curves[0].read_bytes() != before  # the old drawing is gone

    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["plots"] == ["reliability"]
    u = model["uncertainty"]
    for kind in ("plain", "mc_dropout"):
        bins = u["reliability"][kind]
        assert len(bins) == 10 and sum(b["count"] for b in bins) == u["rows"] == 179
        recomputed = sum(
            b["count"] / u["rows"] * abs(b["accuracy"] - b["confidence"])
            for b in bins
            if b["count"]
        )
        assert recomputed == pytest.approx(u[kind]["ece"], abs=1e-12)
        assert set(u[kind]) == {"accuracy", "nll", "brier", "ece"}  # unchanged keys
    url = f"/v1/models/{model['id']}/plots/reliability"
    first = assert_png(client.get(url))
    assert_svg(client.get(url, params={"format": "svg"}))

    # the second request is served from the artifact store: the stored file is what comes back
    (stored,) = [p for p in cached(settings, f"models/{model['id']}") if p.suffix == ".png"]
    assert stored.name.startswith("reliability-") and stored.read_bytes() == first
    stored.write_bytes(first + b"cached")
    assert client.get(url).content == first + b"cached"
    check_refusals(client, queued, model["id"])

    # deleting the objects removes their cached plots
    assert client.delete(f"/v1/jobs/{queued}").status_code == 204
    assert cached(settings, f"jobs/{queued}") == []
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert cached(settings, f"models/{model['id']}") == []


def test_a_model_without_dropout_has_no_plots(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=1, model={"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}
    )
    _, model_id = trained(client, ctx, spec)
    assert client.get(f"/v1/models/{model_id}").json()["plots"] == []
    r = client.get(f"/v1/models/{model_id}/plots/reliability")
    assert r.status_code == 404 and "no reliability plot" in r.json()["error"]["message"]


def batch(client: TestClient, ctx: WorkerContext, model_id: str, body: dict[str, Any]) -> str:
    r = client.post(f"/v1/models/{model_id}/batch-predictions", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["plots"] == []  # queued: nothing to draw yet
    assert run_job(ctx, r.json()["id"]) == "succeeded"
    return str(r.json()["id"])


def test_batch_prediction_plots(client: TestClient, ctx: WorkerContext, settings: Settings) -> None:
    _, model_id = trained(client, ctx, make_spec(epochs=2))
    digits = load_builtin("digits")
    ds = upload(client, digits.X[:400], digits.y[:400])
    for mc in (20, 0):  # MC statistics, then a plain classifier's own entropy
        batch_id = batch(client, ctx, model_id, {"dataset": {"id": ds}, "mc_samples": mc})
        read = client.get(f"/v1/batch-predictions/{batch_id}").json()
        assert read["plots"] == ["entropy_histogram", "uncertain_rows"]
        listed = client.get("/v1/batch-predictions").json()["items"]
        assert next(b for b in listed if b["id"] == batch_id)["plots"] == read["plots"]
        for name in read["plots"]:
            url = f"/v1/batch-predictions/{batch_id}/plots/{name}"
            assert_png(client.get(url))
            assert_svg(client.get(url, params={"format": "svg"}))
        assert len(cached(settings, f"batch_predictions/{batch_id}")) == 4
    r = client.get(f"/v1/batch-predictions/{batch_id}/plots/reliability")
    assert r.status_code == 404 and "entropy_histogram" in r.json()["error"]["message"]


def test_regression_coverage_and_plots(client: TestClient, ctx: WorkerContext) -> None:
    ds = upload_regression(client)
    _, model_id = trained(
        client, ctx, make_spec(epochs=3, dataset={"id": ds}, model=REGRESSION_LAYERS)
    )
    model = client.get(f"/v1/models/{model_id}").json()
    u = model["uncertainty"]
    assert model["plots"] == ["reliability"] and "reliability" not in u
    levels = [c["level"] for c in u["coverage"]]
    coverage = [c["coverage"] for c in u["coverage"]]
    assert levels == [0.5, 0.8, 0.9, 0.95]
    assert coverage == sorted(coverage) and all(0 <= c <= 1 for c in coverage)
    assert coverage[2] == u["mc_dropout"]["coverage_90"]  # the same 5% and 95% quantiles
    assert_png(client.get(f"/v1/models/{model_id}/plots/reliability"))

    batch_id = batch(client, ctx, model_id, {"dataset": {"id": ds}, "mc_samples": 20})
    for name in ("entropy_histogram", "uncertain_rows"):
        assert_png(client.get(f"/v1/batch-predictions/{batch_id}/plots/{name}"))
    # plain regression has no per-row uncertainty: nothing to draw
    plain = batch(client, ctx, model_id, {"dataset": {"id": ds}})
    assert client.get(f"/v1/batch-predictions/{plain}").json()["plots"] == []
    assert client.get(f"/v1/batch-predictions/{plain}/plots/entropy_histogram").status_code == 404


def test_other_tenants_get_404(secured: Any, ctx: WorkerContext) -> None:
    client, alice, bob = secured
    job = client.post("/v1/jobs", json=make_spec(epochs=1), headers=alice).json()
    assert run_job(ctx, job["id"]) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["model_id"]
    paths = [
        f"/v1/jobs/{job['id']}/plots/learning_curves",
        f"/v1/models/{model_id}/plots/reliability",
    ]
    for path in paths:
        r = client.get(path, headers=bob)
        assert r.status_code == 404 and "plot" not in r.json()["error"]["message"], path
        assert client.get(path, headers=alice).status_code == 200, path
        assert client.get(path).status_code == 401


def readme_spec() -> dict[str, Any]:
    """The spec of the README's curl example, as a user copies it."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    body = text.split("cat > spec.json <<'JSON'\n")[-1].split("\nJSON\n")[0]
    return dict(json.loads(body))


def test_the_readme_example_has_its_pictures(client: TestClient, ctx: WorkerContext) -> None:
    spec = readme_spec()
    assert spec["name"] == "digits-bn-mlp"  # the curl example, not another block
    job_id, model_id = trained(client, ctx, spec)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert set(JOB_PLOTS) <= set(job["plots"])
    for name in ("learning_curves", "gradient_health"):
        assert_png(client.get(f"/v1/jobs/{job_id}/plots/{name}"))
    model = client.get(f"/v1/models/{model_id}").json()
    assert model["plots"] == ["reliability"]
    assert_png(client.get(f"/v1/models/{model_id}/plots/reliability"))
    uncertainty = model["uncertainty"]
    for kind in ("plain", "mc_dropout"):
        bins = uncertainty["reliability"][kind]
        assert sum(b["count"] for b in bins) == uncertainty["rows"] > 0
        assert expected_calibration_error(bins) == pytest.approx(uncertainty[kind]["ece"])
