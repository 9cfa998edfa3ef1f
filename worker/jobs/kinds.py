"""Imports every job kind's runner, so that each registers itself in RUNNERS; one module per
kind of service/jobs/kinds.py."""

from worker import batch_prediction, compression  # noqa: F401
from worker.training import runner  # noqa: F401
