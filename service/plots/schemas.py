"""Plot formats and their media types."""

from typing import Any, Literal

PlotFormat = Literal["png", "svg"]
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}

# The 200 answer of every plot route, for the OpenAPI document
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The plot: a PNG image (format=png, the default) or an SVG document.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
        },
    }
}
