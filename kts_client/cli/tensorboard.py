"""`kts tensorboard JOB`: download a job's TensorBoard event files and open TensorBoard on them."""

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from kts_client.cli.common import client, stderr, stdout

DirOpt = Annotated[
    Path,
    typer.Option("--dir", help="Log folder: the job's files go to DIR/JOB/.", file_okay=False),
]
NoOpenOpt = Annotated[
    bool, typer.Option("--no-open", help="Only download and extract; do not start TensorBoard.")
]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="TensorBoard's port.")]


def tensorboard(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    log_dir: DirOpt = Path("kts-tensorboard"),
    no_open: NoOpenOpt = False,
    port: PortOpt = 6006,
) -> None:
    """Download a job's TensorBoard event files, then run `tensorboard --logdir DIR`."""
    with client(ctx) as kts:
        run_dir = kts.download_tensorboard(job_id, log_dir)
    stdout.print(f"event files in {run_dir}", markup=False, soft_wrap=True)
    if no_open:
        return
    executable = shutil.which("tensorboard")
    if executable is None:
        stderr.print(
            "tensorboard is not installed here (pip install tensorboard); then run: "
            f"tensorboard --logdir {log_dir}",
            markup=False,
            soft_wrap=True,
        )
        return
    command = [executable, "--logdir", str(log_dir), "--port", str(port)]
    raise typer.Exit(subprocess.call(command))
