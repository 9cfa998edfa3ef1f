"""docs/API.md documents every route the app serves, and no route it does not serve."""

import re
from collections import Counter
from pathlib import Path

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "API.md"
README = ROOT / "README.md"

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# One heading per route, exactly `### METHOD /path`, path parameters as OpenAPI writes them.
ROUTE_HEADING = re.compile(rf"^### ({'|'.join(HTTP_METHODS)}) (/\S*)[ \t]*$", re.MULTILINE)

Route = tuple[str, str]


def documented_routes() -> list[Route]:
    return [(method, path) for method, path in ROUTE_HEADING.findall(API_DOC.read_text())]


def served_routes(settings: Settings) -> set[Route]:
    """(METHOD, path) of every route in the OpenAPI schema (FastAPI's own pages are not in it)."""
    paths = create_app(settings).openapi()["paths"]
    return {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method.upper() in HTTP_METHODS  # a path item may also hold "parameters", "summary"
    }


def _listing(routes: set[Route]) -> str:
    return "\n".join(f"  {method} {path}" for method, path in sorted(routes, key=lambda r: r[::-1]))


def test_every_route_is_documented_and_every_documented_route_exists(
    settings: Settings,
) -> None:
    documented = documented_routes()
    served = served_routes(settings)
    assert served, "the app serves no routes: the OpenAPI schema is empty"
    twice = {route for route, n in Counter(documented).items() if n > 1}
    undocumented = served - set(documented)
    not_served = set(documented) - served
    problems = []
    if undocumented:
        problems.append(
            f"Served but missing from docs/API.md (add a `### METHOD /path` heading):\n"
            f"{_listing(undocumented)}"
        )
    if not_served:
        problems.append(
            f"Documented in docs/API.md but not served by the app:\n{_listing(not_served)}"
        )
    if twice:
        problems.append(f"Documented more than once in docs/API.md:\n{_listing(twice)}")
    assert not problems, "\n".join(problems)


def test_readme_links_the_api_contract() -> None:
    assert "docs/API.md" in README.read_text(), "README.md should link docs/API.md"
