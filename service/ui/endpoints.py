"""Dashboard routes: three HTML pages and their two static files, outside the OpenAPI schema.

The pages carry no tenant data: the script fetches everything from the API with the user's key,
so a page is the same for every tenant and shows only what that key may see.
"""

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from service.errors import NotFound

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

# Everything the pages load comes from this origin; images arrive as blob: URLs because they are
# fetched with the API key (an <img src> cannot send one).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",  # else the browser asks for /favicon.ico, a 404
}
# What the submit form starts with: a small digits MLP with dropout (so the model page has an
# uncertainty table) that trains in seconds.
EXAMPLE_SPEC: dict[str, Any] = {
    "name": "digits-dropout-mlp",
    "dataset": {"builtin": "digits"},
    "epochs": 20,
    "seed": 42,
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "model": {
        "layers": [
            {"type": "dense", "units": 64, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
}
Id = Annotated[str, PathParam(min_length=1, max_length=200)]


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    context["auth_required"] = bool(request.app.state.require_auth)
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    """The jobs list with a submit form."""
    return _page(request, "jobs.html", example=json.dumps(EXAMPLE_SPEC, indent=2))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: Id) -> HTMLResponse:
    """One job: status, live learning curves, gradient health, warnings, cancel."""
    return _page(request, "job.html", job_id=job_id)


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, model_id: Id) -> HTMLResponse:
    """One model: summary, metrics, uncertainty, reliability and a predict form."""
    return _page(request, "model.html", model_id=model_id)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """The dashboard's script and style sheet (a fixed list: no path ever reaches the disk)."""
    if name not in STATIC:
        raise NotFound(f"No static file {name[:100]!r}.")
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC[name],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
