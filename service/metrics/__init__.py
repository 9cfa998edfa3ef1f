"""Prometheus metrics at GET /metrics: this process's own, and the service's from the database."""
