"""The README's first-model walk-through, run as written against `kts serve` (the embedded
default): train with --follow, alias the model champion, predict by name@champion with 100
Monte-Carlo samples, delete."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_end_to_end import free_port

README = Path(__file__).parent.parent / "README.md"
BIN = Path(sys.executable).parent


def walkthrough() -> str:
    text = README.read_text()
    block = re.search(
        r"<!-- walkthrough:start.*?-->\n```bash\n(.*?)```\n<!-- walkthrough:end", text, re.S
    )
    assert block, "README.md has no walkthrough block"
    return block.group(1)


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env |= {"PATH": f"{BIN}:{env['PATH']}", "KTS_BACKEND": os.environ.get("KTS_BACKEND", "jax")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(BIN / "kts"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        work = tmp_path / "work"
        work.mkdir()
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough()],
            cwd=work,
            env={**env, "KTS_URL": f"http://127.0.0.1:{port}", "COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "digits-bn-mlp" in out and "champion" in out
        assert "±" in out  # mean ± std per row from 100 samples
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["items"]
        assert models == []  # deleted at the end
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
