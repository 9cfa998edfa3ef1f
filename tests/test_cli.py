"""The `kts` user commands, run as subprocesses against a live service (tests/test_client.py's
LiveService: the real app under uvicorn and the worker's job life cycle)."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from kts_client import ApiError, Client
from tests.conftest import make_spec, sqlite_settings
from tests.test_client import LiveService

KTS = str(Path(sys.executable).parent / "kts")
DIGITS = load_digits()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = sqlite_settings(tmp_path_factory.mktemp("cli") / "data")
    with LiveService(settings) as live:
        yield live


def kts(service: LiveService, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `kts --url URL ARGS...` and wait for it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    return subprocess.run(
        [KTS, "--url", service.url, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def model(service: LiveService, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`kts train spec.json --follow`: its output, and the model it made."""
    spec = tmp_path_factory.mktemp("spec") / "spec.json"
    spec.write_text(json.dumps(make_spec(epochs=2, name="cli-mlp")))
    done = kts(service, "train", str(spec), "--follow")
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"^job (\w+) succeeded$", done.stdout, re.MULTILINE)
    assert found is not None, done.stdout
    with Client(service.url) as client:
        job = client.get_job(found.group(1))
    assert job.status == "succeeded" and job.model_id is not None
    return {"id": job.model_id, "job_id": job.id, "output": done.stdout}


def test_train_follow_shows_epochs_metrics_and_the_model(model: dict[str, Any]) -> None:
    out = model["output"]
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert "loss" in out and "val_accuracy" in out and "lr " in out
    assert f"job {model['job_id']} succeeded" in out
    assert f"model {model['id']}" in out
    assert "mc_dropout" in out and "ece" in out  # the uncertainty summary


def test_train_with_data_uploads_it_first(service: LiveService, tmp_path: Path) -> None:
    data = tmp_path / "digits.csv"
    header = ",".join([f"p{i}" for i in range(64)] + ["digit"])
    rows = [",".join(map(str, [*DIGITS.data[i], DIGITS.target[i]])) for i in range(300)]
    data.write_text("\n".join([header, *rows]) + "\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(make_spec(epochs=1, name="from-csv")))
    done = kts(service, "train", str(spec), "--data", str(data), "--target", "digit", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] in ("queued", "running") and "data set" in done.stderr
    dataset_id = job["spec"]["dataset"]["id"]
    with Client(service.url) as client:
        assert client.get_dataset(dataset_id).n_samples == 300
        assert client.wait(job["id"], timeout=300).status == "succeeded"
    followed = kts(service, "jobs", "follow", job["id"], "--json")
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [x["epoch"] for x in lines if x["event"] == "progress"] == [1]
    assert lines[-1]["event"] == "done" and lines[-1]["job"]["id"] == job["id"]


def test_jobs_list_json_and_show(service: LiveService, model: dict[str, Any]) -> None:
    listed = kts(service, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert model["job_id"] in [j["id"] for j in page["items"]] and "next_cursor" in page
    also = kts(service, "--json", "jobs", "list", "--status", "succeeded", "--limit", "1")
    assert len(json.loads(also.stdout)["items"]) == 1
    table = kts(service, "jobs", "list")
    assert model["job_id"] in table.stdout and "succeeded" in table.stdout
    shown = kts(service, "jobs", "show", model["job_id"])
    assert shown.returncode == 0 and model["id"] in shown.stdout
    diagnostics = kts(service, "jobs", "diagnostics", model["job_id"])
    assert diagnostics.returncode == 0 and "epoch 2" in diagnostics.stdout


def test_failures_exit_non_zero_with_the_error(service: LiveService, tmp_path: Path) -> None:
    missing = kts(service, "jobs", "show", "no-such-job")
    assert missing.returncode == 1
    assert "not_found" in missing.stderr and "no-such-job" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make_spec(model={"layers": [{"type": "dense", "units": 0}]})))
    refused = kts(service, "train", str(bad))
    assert refused.returncode == 1
    assert "validation_error" in refused.stderr and "model.layers[0].units" in refused.stderr
    down = subprocess.run(
        [KTS, "--url", "http://127.0.0.1:9", "jobs", "list"], capture_output=True, text=True
    )
    assert down.returncode == 1 and "cannot reach" in down.stderr
    usage = kts(service, "jobs", "list", "--status", "sleeping")
    assert usage.returncode == 2


def test_models_predict_table_csv_parquet_and_npy(
    service: LiveService, model: dict[str, Any], tmp_path: Path
) -> None:
    rows_csv = tmp_path / "rows.csv"
    header = ",".join(f"p{i}" for i in range(64))
    rows_csv.write_text("\n".join([header, *(",".join(map(str, r)) for r in DIGITS.data[:3])]))
    shown = kts(service, "models", "predict", model["id"], str(rows_csv), "--mc", "20")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("±") == 4  # "p ± std": the header, then one per row
    assert "predictive entropy" in shown.stdout and "mutual information" in shown.stdout

    out_csv = tmp_path / "p.csv"
    written = kts(
        service,
        "models",
        "predict",
        model["id"],
        str(rows_csv),
        "--mc",
        "20",
        "--seed",
        "3",
        "--out",
        str(out_csv),
    )
    assert written.returncode == 0, written.stderr
    lines = out_csv.read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 4 and header[:2] == ["row", "class"]
    assert {"predictive_entropy", "mutual_information", "mean_9", "std_9"} <= set(header)

    rows_npy = tmp_path / "rows.npy"
    np.save(rows_npy, DIGITS.data[:3])
    out_parquet = tmp_path / "p.parquet"
    parquet = kts(
        service,
        "models",
        "predict",
        model["id"],
        str(rows_npy),
        "--mc",
        "20",
        "--seed",
        "3",
        "--out",
        str(out_parquet),
    )
    assert parquet.returncode == 0, parquet.stderr
    import pyarrow.parquet as pq

    read = pq.read_table(out_parquet).to_pydict()
    assert read["row"] == [0, 1, 2] and len(read["mean_0"]) == 3

    as_json = kts(service, "models", "predict", model["id"], str(rows_npy), "--json")
    assert np.array(json.loads(as_json.stdout)["mean"]).shape == (3, 10)


def test_models_show_download_alias_delete(
    service: LiveService, model: dict[str, Any], tmp_path: Path
) -> None:
    shown = kts(service, "models", "show", model["id"])
    assert shown.returncode == 0 and "Dense" in shown.stdout
    got = kts(service, "models", "download", model["id"], str(tmp_path))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / f"{model['id']}.keras").stat().st_size > 0

    with Client(service.url) as client:
        try:
            name = client.get_model(model["id"]).name
            client.list_models(limit=1)
        except ApiError as exc:  # pragma: no cover - before the registry routes
            pytest.skip(f"registry routes not served yet: {exc.status}")
    aliased = kts(service, "models", "alias", model["id"], "champion")
    assert aliased.returncode == 0, aliased.stderr
    assert f"{name}@champion -> {model['id']}" in aliased.stdout
    rows = tmp_path / "rows.npy"
    np.save(rows, DIGITS.data[:2])
    mc = kts(service, "models", "predict", f"{name}@champion", str(rows), "--mc", "10")
    assert mc.returncode == 0 and "±" in mc.stdout
    listed = json.loads(kts(service, "models", "list", "--alias", "champion", "--json").stdout)
    assert [m["id"] for m in listed["items"]] == [model["id"]]
    tagged = kts(service, "models", "tags", model["id"], "stage=prod")
    assert tagged.returncode == 0, tagged.stderr
    assert kts(service, "models", "list", "--tag", "stage:prod").stdout.count(model["id"]) == 1
    removed = kts(service, "models", "alias", model["id"], "champion", "--delete")
    assert removed.returncode == 0, removed.stderr
    gone = kts(service, "models", "delete", "no-such-model")
    assert gone.returncode == 1 and "not_found" in gone.stderr


def test_datasets_upload_list_delete(service: LiveService, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, X=DIGITS.data[:20], y=DIGITS.target[:20])
    uploaded = kts(service, "datasets", "upload", str(data), "--name", "twenty", "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert dataset["n_samples"] == 20 and dataset["name"] == "twenty"
    listed = json.loads(kts(service, "datasets", "list", "--json").stdout)
    assert dataset["id"] in [d["id"] for d in listed["items"]]
    deleted = kts(service, "datasets", "delete", dataset["id"])
    assert deleted.returncode == 0, deleted.stderr
    again = kts(service, "datasets", "delete", dataset["id"])
    assert again.returncode == 1 and "not_found" in again.stderr


def test_server_commands_keep_their_flags(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env["KTS_DATA_DIR"] = str(tmp_path / "data")
    helped = subprocess.run([KTS, "serve", "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "--data-dir" in helped.stdout
    worker = subprocess.run([KTS, "worker", "--help"], capture_output=True, text=True, env=env)
    assert worker.returncode == 0 and "--gpus" in worker.stdout
    migrated = subprocess.run([KTS, "migrate"], capture_output=True, text=True, env=env)
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(
        [KTS, "keys", "create", "--tenant", "acme"], capture_output=True, text=True, env=env
    )
    assert created.returncode == 0 and created.stdout.strip()
    listed = subprocess.run([KTS, "keys", "list"], capture_output=True, text=True, env=env)
    assert "acme" in listed.stdout
    completion = subprocess.run(
        [KTS, "--show-completion", "bash"], capture_output=True, text=True, env=env
    )
    assert completion.returncode == 0 and "kts" in completion.stdout
