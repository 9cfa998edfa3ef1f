"""The root of `kts`: global options, the command groups, and the server commands passed
through to service/cli.py unchanged."""

import sys

import httpx
import typer

from kts_client.cli import datasets, jobs, models, tensorboard, train
from kts_client.cli.common import State, print_api_error, stderr
from kts_client.errors import ApiError

app = typer.Typer(
    name="kts",
    help="Keras Training Service: train, follow, inspect and use models; run the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.command("train")(train.train)
app.command("tensorboard")(tensorboard.tensorboard)


@app.callback()
def root(
    ctx: typer.Context,
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="KTS_URL",
        metavar="URL",
        help="Service URL [default: http://127.0.0.1:8000]",
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="KTS_API_KEY", metavar="KEY", help="API key (bearer token)"
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON objects, not tables."),
) -> None:
    """Keras Training Service."""
    ctx.obj = State(url=url, api_key=api_key, json=json_out)


# The server commands keep service/cli.py's argparse flags: typer passes the raw arguments on.
_PASSTHROUGH = {
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
    "add_help_option": False,
}


def _server(command: str, args: list[str]) -> None:
    from service.cli import main as server_main

    raise typer.Exit(server_main([command, *args]))


@app.command("serve", **_PASSTHROUGH)  # type: ignore[arg-type]
def serve(ctx: typer.Context) -> None:
    """Start the API (and an embedded worker without a broker). --help for its flags."""
    _server("serve", ctx.args)


@app.command("worker", **_PASSTHROUGH)  # type: ignore[arg-type]
def worker(ctx: typer.Context) -> None:
    """Start a Celery worker (one per GPU with --gpus). --help for its flags."""
    _server("worker", ctx.args)


@app.command("migrate", **_PASSTHROUGH)  # type: ignore[arg-type]
def migrate(ctx: typer.Context) -> None:
    """Bring the database to the newest migration."""
    _server("migrate", ctx.args)


@app.command("keys", **_PASSTHROUGH)  # type: ignore[arg-type]
def keys(ctx: typer.Context) -> None:
    """Manage API keys: create --tenant NAME | list | revoke KEY_ID."""
    _server("keys", ctx.args)


def _url_of(exc: httpx.TransportError) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # raised without a request
        return "the service"


def main() -> int:
    """Run `kts`; API errors exit 1 with their code, message and field paths."""
    try:
        app()
    except ApiError as exc:
        print_api_error(exc)
        return 1
    except httpx.TransportError as exc:
        stderr.print(
            f"error: cannot reach {_url_of(exc)}: {type(exc).__name__}: {exc}",
            markup=False,
            soft_wrap=True,
        )
        return 1
    except (OSError, ValueError, TimeoutError) as exc:  # unreadable files, bad rows or spec
        stderr.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
