"""Logs operators can search: JSON-lines process logs with request, tenant, job and model ids,
and each job's own log lines (GET /v1/jobs/{job_id}/logs)."""
