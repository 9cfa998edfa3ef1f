"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright,
against `kts serve` with its embedded worker. Submit from the page, watch the learning curve
grow while the job trains, open the model, predict; and the same with API keys on.

Screenshots go to $KTS_TEST_ARTIFACTS (default <repo>/test-artifacts/). Any JavaScript error
(an uncaught exception or a console error) fails the test. Without Chromium or Playwright the
tests are skipped, with one line saying why, unless CI=true: then they fail.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_end_to_end import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("KTS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("KTS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
TRAINING_TIMEOUT_MS = 240_000

# Long enough (30 epochs at batch 4, about 400 steps each) that the page sees the curve grow
# over several stream polls before the job ends; dropout and validation rows give the model
# page an uncertainty table.
LIVE_SPEC: dict[str, Any] = {
    "name": "ui-digits",
    "dataset": {"builtin": "digits"},
    "epochs": 30,
    "batch_size": 4,
    "seed": 3,
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "model": {
        "layers": [
            {"type": "dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
}
SMALL_SPEC: dict[str, Any] = {
    "name": "ui-iris",
    "dataset": {"builtin": "iris"},
    "epochs": 2,
    "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
}

# Runs before the page's own script: records the number of plotted epochs and the status badge
# each time the charts are redrawn, so the test sees the curve grow while the job runs.
RECORDER = """
document.addEventListener("DOMContentLoaded", () => {
  window.__curve = [];
  const charts = document.getElementById("charts");
  if (!charts) return;
  new MutationObserver(() => {
    const chart = charts.querySelector("svg.chart");
    if (!chart) return;
    window.__curve.push({points: Number(chart.dataset.points),
                         status: document.getElementById("job-status").textContent});
  }).observe(charts, {childList: true});
});
"""


def _missing_browser() -> str | None:
    """One line naming what the browser tests lack, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KTS_TEST_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


@dataclass
class Server:
    base: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def key(self, tenant: str) -> str:
        """A new API key for `tenant`, made the way an operator makes one."""
        out = subprocess.run(
            [str(BIN / "kts"), "keys", "create", "--tenant", tenant],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]


def _serve(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    base_env["KTS_BACKEND"] = os.environ.get("KTS_BACKEND", "jax")
    base_env["KTS_DATA_DIR"] = str(tmp_path / "data")
    return Server(f"http://127.0.0.1:{port}", tmp_path / "data", base_env | env, tmp_path / "log")


def _start(server: Server) -> None:
    port = server.base.rsplit(":", 1)[1]
    log = server.log.open("wb")
    server.process = subprocess.Popen(
        [str(BIN / "kts"), "serve", "--port", port, "--data-dir", str(server.data_dir)],
        env=server.env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert server.process.poll() is None, server.log.read_text()[-3000:]
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.5)


def _stop(server: Server) -> None:
    if server.process is not None:
        server.process.terminate()
        server.process.wait(timeout=60)


@dataclass
class Page:
    """A browser tab that collects every JavaScript error it sees."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_no_errors(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


def _tab(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.add_init_script(RECORDER)
    tab = Page(context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
    tab.page.on(
        "console",
        lambda msg: (
            tab.errors.append(f"console: {msg.text} at {msg.location.get('url')}")
            if msg.type == "error"
            else None
        ),
    )
    tab.page.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    yield from _tab(browser)


def _submit_from_page(tab: Page, base: str, spec: dict[str, Any]) -> str:
    """Fill the jobs page's form, submit, and return the id of the job page it opens."""
    page = tab.page
    page.fill("#spec-input", json.dumps(spec, indent=2))
    page.click("#submit-button")
    page.wait_for_url(f"{base}/ui/jobs/*")
    return str(page.url.rsplit("/", 1)[1])


@pytest.mark.slow
def test_dashboard_trains_watches_and_predicts(tmp_path: Path, tab: Page) -> None:
    server = _serve(tmp_path)
    _start(server)
    try:
        page = tab.page
        page.goto(f"{server.base}/ui")
        page.wait_for_selector("#jobs-empty", state="visible")
        assert page.input_value("#spec-input").lstrip().startswith("{")  # the example spec
        tab.shot("01-jobs-empty")

        job_id = _submit_from_page(tab, server.base, LIVE_SPEC)
        page.wait_for_selector("#charts svg.chart", timeout=TRAINING_TIMEOUT_MS)
        tab.shot("02-job-training")  # most likely mid-training; asserted below from the record
        page.wait_for_selector("#job-status.succeeded", timeout=TRAINING_TIMEOUT_MS)
        job = httpx.get(f"{server.base}/v1/jobs/{job_id}", timeout=60).json()
        assert job["status"] == "succeeded", job
        if "gradient_health" in job.get("plots", []):  # drawn again for the ended job
            page.wait_for_selector('#plots[data-status="succeeded"] img', timeout=60_000)
            _assert_image_loaded(page, "#plots img")
        tab.shot("03-job-succeeded")

        # The curve grew while the job ran: at least two different point counts drawn under
        # a "running" badge, then every epoch.
        curve = page.evaluate("window.__curve")
        live = {r["points"] for r in curve if r["status"] == "running"}
        assert len(live) >= 2, curve
        assert page.get_attribute("#charts svg.chart", "data-points") == "30"
        assert page.locator("#charts figure").first.locator("polyline").count() == 2  # loss, val
        assert page.text_content("#job-progress-text") == "epoch 30 of 30"

        page.click("#job-model")
        page.wait_for_url(f"{server.base}/ui/models/*")
        page.wait_for_selector("#uncertainty-card", state="visible")
        assert page.locator("#uncertainty-table tbody tr").count() >= 4  # accuracy, nll, ...
        model = httpx.get(f"{server.base}/v1/models/{job['model_id']}", timeout=60).json()
        if "reliability" in model.get("plots", []):
            _assert_image_loaded(page, "#reliability img")

        from sklearn.datasets import load_digits

        row = load_digits().data[0]  # a zero, picked from the model's data set
        page.wait_for_selector("#pick-form", state="visible")
        assert page.text_content("#pick-dataset") == "digits"
        page.fill("#pick-input", "0")
        page.click("#pick-button")
        # Not `wait_for_function("...")`: it polls by eval, which the page's CSP forbids.
        from playwright.sync_api import expect

        expect(page.locator("#row-input")).not_to_have_value("", timeout=30_000)
        picked = [float(v) for v in page.input_value("#row-input").split(",")]
        assert picked == [float(v) for v in row]
        assert page.text_content("#pick-label").startswith("label 0")
        page.fill("#mc-input", "50")
        page.fill("#seed-input", "7")
        page.click("#predict-button")
        page.wait_for_selector("#prediction-bars svg.bars")
        bars = page.locator("#prediction-bars g.bar-row")
        assert bars.count() == 10
        means = [float(bars.nth(i).get_attribute("data-mean")) for i in range(10)]
        assert abs(sum(means) - 1) < 1e-3 and max(means) == means[0]
        assert "±" in page.text_content("#prediction-bars")
        assert "predictive entropy" in page.text_content("#prediction-summary")
        tab.shot("04-model-prediction")
        tab.assert_no_errors()
    finally:
        _stop(server)


@pytest.mark.slow
def test_dashboard_with_api_keys(tmp_path: Path, tab: Page) -> None:
    server = _serve(tmp_path, KTS_REQUIRE_AUTH="true")
    alice, bob = server.key("alice"), server.key("bob")
    _start(server)
    try:
        others = httpx.post(
            f"{server.base}/v1/jobs",
            json=SMALL_SPEC,
            headers={"Authorization": f"Bearer {bob}"},
            timeout=60,
        ).json()["id"]
        page = tab.page
        page.goto(f"{server.base}/ui")
        page.wait_for_selector("#key-form", state="visible")
        tab.shot("05-key-asked")
        page.fill("#key-input", alice)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#jobs-empty", state="visible")  # bob's job is not alice's

        job_id = _submit_from_page(tab, server.base, SMALL_SPEC)
        page.wait_for_selector("#job-status.succeeded", timeout=TRAINING_TIMEOUT_MS)
        assert page.get_attribute("#charts svg.chart", "data-points") == "2"  # the stream
        assert not page.is_visible("#key-form")  # the key is kept across pages

        page.goto(f"{server.base}/ui")
        page.wait_for_selector(f'#jobs-body tr[data-job-id="{job_id}"]')
        assert page.locator("#jobs-body tr").count() == 1
        assert page.locator(f'#jobs-body tr[data-job-id="{others}"]').count() == 0
        tab.shot("06-jobs-with-key")
        tab.assert_no_errors()

        # Another tenant's job page: the shell renders, the script's call answers 404.
        page.goto(f"{server.base}/ui/jobs/{others}")
        page.wait_for_selector("#page-error", state="visible")
        assert page.text_content("#page-error").startswith("Not found")
        assert not page.is_visible("#content")
        tab.shot("07-other-tenants-job")
        expected = f"status of 404 (Not Found) at {server.base}/v1/jobs/{others}"
        assert tab.errors and all(expected in e for e in tab.errors), tab.errors
    finally:
        _stop(server)


def _assert_image_loaded(page: Any, selector: str) -> None:
    """Waits with Playwright's matchers: `wait_for_function` polls by eval, which CSP forbids."""
    from playwright.sync_api import expect

    image = page.locator(selector).first
    expect(image).to_have_js_property("complete", True, timeout=30_000)
    assert image.evaluate("i => i.naturalWidth") > 0, f"{selector} did not load"


def test_artifacts_folder_is_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = ROOT / "test-artifacts" / "x.png"
    out = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=ROOT, capture_output=True, check=False
    )
    assert out.returncode == 0, "test-artifacts/ should be in .gitignore"
