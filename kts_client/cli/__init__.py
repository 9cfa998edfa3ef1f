"""The `kts` command: the user commands over the client (train, jobs, models, datasets) and
the server commands (serve, worker, migrate, keys) of service/cli.py."""

from kts_client.cli.app import app, main

__all__ = ["app", "main"]
