"""The metric objects the prediction path updates as it runs (this API process only).

They live on a registry per app (`app.state.metrics`), not on prometheus_client's global one:
a process that builds many apps (the tests do) would otherwise register each name twice.
"""

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Compute time of one predict call: a few milliseconds plain, up to seconds with many MC samples.
PREDICT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PredictInstruments:
    """Predict latency per cached model, Monte-Carlo throughput and the loaded-model cache."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "kts_predict_duration_seconds",
            "Time to compute one predict call, by model (only models in the predictor cache "
            "keep a series) and mode (plain or mc); loading on a cache miss is not included.",
            ["model_id", "mode"],
            buckets=PREDICT_BUCKETS,
            registry=registry,
        )
        self.mc_samples = Counter(
            "kts_mc_samples",
            "Monte-Carlo forward passes drawn: instances x mc_samples of each MC predict call.",
            registry=registry,
        )
        self.mc_seconds = Counter(
            "kts_mc_seconds",
            "Seconds spent computing MC predict calls; rate(samples) / rate(seconds) is the "
            "samples per second.",
            registry=registry,
        )
        self.cache_hits = Counter(
            "kts_model_cache_hits",
            "Predict calls that found their model loaded.",
            registry=registry,
        )
        self.cache_misses = Counter(
            "kts_model_cache_misses",
            "Predict calls that had to load their model.",
            registry=registry,
        )
        self.cache_evictions = Counter(
            "kts_model_cache_evictions", "Models dropped from the cache.", registry=registry
        )
        self.cache_models = Gauge(
            "kts_model_cache_models",
            "Models loaded in this API process (with --workers N: in all of them).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "kts_model_cache_bytes",
            "Estimated memory of the loaded models (the figure KTS_MODEL_CACHE_BYTES bounds, "
            "per API process; with --workers N, the sum over them).",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe(self, model_id: str, mc_samples: int, rows: int, seconds: float) -> None:
        """One predict call's compute time (its model is in the cache: the caller checked)."""
        self.latency.labels(model_id, "mc" if mc_samples else "plain").observe(seconds)
        if mc_samples:
            self.mc_samples.inc(mc_samples * rows)
            self.mc_seconds.inc(seconds)

    def cached(self, cache: dict[str, Any], evicted: Iterable[str]) -> None:
        """After the cache changed: its size, and no latency series left for evicted models (so
        the label set stays bounded by KTS_MODEL_CACHE_SIZE)."""
        for model_id in evicted:
            self.cache_evictions.inc()
            for mode in ("plain", "mc"):
                self.latency.remove(model_id, mode)  # a no-op for a mode never used
        self.cache_models.set(len(cache))
        self.cache_bytes.set(sum(p.memory_bytes for p in cache.values()))


def predict_instruments(state: Any) -> PredictInstruments:
    """The app's instruments (create_app installs them); a state without them gets its own."""
    if not hasattr(state, "metrics"):
        state.metrics = PredictInstruments(CollectorRegistry())
    return state.metrics  # type: ignore[no-any-return]
