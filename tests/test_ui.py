"""The dashboard's pages and files as served (the browser test, tests/test_ui_browser.py, runs
the script itself)."""

import html
import json
import re

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.settings import Settings
from tests.conftest import make_spec, submit

PAGES = ["/ui", "/ui/jobs/some-job", "/ui/models/some-model"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_with_a_content_security_policy(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    assert '<script src="/ui/static/dashboard.js" defer></script>' in html
    assert 'href="/ui/static/dashboard.css"' in html
    assert "://" not in html  # no CDN, no external font: everything from this origin
    assert not re.search(r"<script>|<script [^>]*>[^<]", html)  # no inline script
    assert " style=" not in html  # no inline style (the policy would refuse it)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_are_served_with_their_type(
    client: TestClient, name: str, content_type: str
) -> None:
    r = client.get(f"/ui/static/{name}")
    assert r.status_code == 200 and r.content
    assert r.headers["content-type"] == content_type
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["other.js", "..%2Fendpoints.py", "%2E%2E%2Fendpoints.py"])
def test_only_the_listed_static_files_exist(client: TestClient, name: str) -> None:
    r = client.get(f"/ui/static/{name}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_an_unknown_job_page_still_renders_its_id_escaped(client: TestClient) -> None:
    r = client.get("/ui/jobs/<img src=x onerror=alert(1)>")
    assert r.status_code == 200
    assert 'data-job-id="&lt;img src=x onerror=alert(1)&gt;"' in r.text
    assert "<img src=x" not in r.text


def test_pages_carry_no_tenant_data(client: TestClient) -> None:
    job_id = submit(client, make_spec(name="secret-name"))
    html = client.get("/ui").text + client.get(f"/ui/jobs/{job_id}").text
    assert "secret-name" not in html  # the script fetches it with the key
    assert f'data-job-id="{job_id}"' in html  # only the id from the address


def test_with_keys_the_pages_ask_for_one_and_the_api_still_refuses(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"require_auth": True}))
    with app.state.session_factory() as session:
        key = create_key(session, "alice")
        session.commit()
    with TestClient(app) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and 'data-auth="required"' in page.text
        assert c.get("/ui/static/dashboard.js").status_code == 200
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_without_keys_the_pages_say_so(client: TestClient) -> None:
    assert 'data-auth="off"' in client.get("/ui").text


def test_the_submit_form_starts_with_a_spec_the_service_accepts(client: TestClient) -> None:
    page = client.get("/ui").text
    text = re.search(r'<textarea id="spec-input"[^>]*>(.*?)</textarea>', page, re.S)
    assert text, "the jobs page has no spec textarea"
    spec = json.loads(html.unescape(text.group(1)))
    assert client.post("/v1/jobs/validate", json=spec).status_code == 200


def test_dashboard_routes_are_not_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]
