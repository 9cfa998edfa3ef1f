"""Which plots exist, and which an object has now, decided from its stored fields alone.

The read shapes (job, model, batch prediction) list `plots` from here, so this module must stay
cheap: no rendering, no extra query, no matplotlib.
"""

from typing import Any

from service.rows import BatchPrediction, Job, TrainedModel

JOB_PLOTS = ("learning_curves", "gradient_health", "activation_saturation")
MODEL_PLOTS = ("reliability",)
BATCH_PLOTS = ("entropy_histogram", "uncertain_rows")


def epochs_done(job: Job) -> int:
    return len((job.history or {}).get("loss") or [])


def job_plots(job: Job) -> list[str]:
    """learning_curves once an epoch has a loss; the gradient-health plots for training jobs
    (their diagnostics are written at each epoch end)."""
    if epochs_done(job) == 0:
        return []
    if job.kind != "train":
        return ["learning_curves"]
    return list(JOB_PLOTS)


def model_plots(model: TrainedModel) -> list[str]:
    """reliability when the uncertainty block carries its bins (classifiers) or coverage
    (regression); models stored before these were measured have neither."""
    block: dict[str, Any] = model.uncertainty or {}
    return ["reliability"] if block.get("reliability") or block.get("coverage") else []


def batch_plots(row: BatchPrediction, status: str) -> list[str]:
    """Both plots once the results exist and carry a per-row uncertainty (MC, or a plain
    classifier's entropy; plain regression has none)."""
    summary = row.summary or {}
    measure = str(summary.get("uncertainty_measure"))
    if status != "succeeded" or row.results_key is None or not summary.get(measure):
        return []
    return list(BATCH_PLOTS)
