"""GET /metrics in Prometheus's text format, and the per-app registry behind it.

Each app has its own CollectorRegistry (prometheus_client's global one would refuse the same
names from a second app in one process). It holds: HTTP requests and latency by route template
(prometheus-fastapi-instrumentator's middleware; /metrics itself is left out), the prediction
path's instruments (service/metrics/instruments.py), this process's CPU, memory and GC, and the
job, queue and worker figures read from the database (service/metrics/collectors.py).
With `kts serve --workers N` the HTTP and prediction figures are those of all N processes
(service/metrics/multiprocess.py), and the per-process CPU, memory and GC figures are left out.
"""

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware

from service.auth import TenantDep
from service.metrics import multiprocess
from service.metrics.collectors import JobCollector
from service.metrics.instruments import PredictInstruments

router = APIRouter(tags=["metrics"])

# Request latency: from a health check's milliseconds to a large upload's minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TEXT = {
    "description": "The metrics in Prometheus's text format 0.0.4 (see docs/API.md).",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@router.get("/metrics", response_class=Response, responses={200: TEXT})
def read_metrics(tenant: TenantDep, request: Request) -> Response:
    """Prometheus metrics: HTTP, predictions and model cache of this process; jobs and queue."""
    # a plain def: the job figures are read from the database in the server's thread pool
    body = generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


def install_metrics(app: FastAPI) -> None:
    """The app's registry and instruments, and the HTTP middleware (added last, so that it is
    the outermost and counts the answers of the other middleware too)."""
    disable_created_metrics()  # no *_created series: Prometheus ignores them in this format
    state = app.state
    registry = CollectorRegistry()  # where the instruments are made
    if multiprocess.enabled():  # `kts serve --workers N`: expose the sum of all processes
        state.metrics_registry = multiprocess.collector_registry()
    else:
        state.metrics_registry = registry
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
    state.metrics = PredictInstruments(registry)
    state.metrics_registry.register(JobCollector(state.session_factory, state.settings))
    instrumentator = Instrumentator(
        should_group_status_codes=False,  # 404 and 422 apart, not one "4xx"
        should_group_untemplated=True,  # a path no route matches counts as handler="none"
        excluded_handlers=["^/metrics$"],
        registry=registry,
    )
    instrumentator.add(
        metrics.requests(registry=registry),
        metrics.latency(buckets=LATENCY_BUCKETS, registry=registry),
    )
    instrumentator.instrument(app)
    for entry in app.user_middleware:  # its class, swapped for the one that reads the route
        if entry.cls is PrometheusInstrumentatorMiddleware:
            entry.cls = RoutedInstrumentatorMiddleware  # type: ignore[assignment]


class RoutedInstrumentatorMiddleware(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware, naming a request's handler by the route the router
    matched (`scope["route"]`, a template such as /v1/jobs/{job_id}). The stock one matches
    the path against every route again after each request, which under FastAPI's included
    routers rebuilds their route contexts: 14% of the event loop's CPU under submit load."""

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        path = getattr(request.scope.get("route"), "path", None)
        if isinstance(path, str) and not request.scope.get("root_path"):
            return path, True
        return super()._get_handler(request)
