"""The one way a plot becomes bytes: a matplotlib Figure on its own Agg canvas.

Only the object API is used: pyplot keeps global state and is not thread-safe, and plots are
rendered in the server's thread pool. This module (and with it matplotlib) is imported on the
first plot request, so the API's start-up does not pay for it.
"""

import io
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
# No date or software version in the files: the same numbers give the same bytes
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def new_figure(width: float = 9.0, height: float = 5.5) -> Figure:
    """A figure (in inches at DPI) with its own Agg canvas and a tight layout."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def encode(figure: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt, dpi=DPI, metadata=METADATA[fmt])
    return buf.getvalue()


def note(ax: Axes, text: str) -> None:
    """A centred message on an empty panel (e.g. nothing of this kind to show)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def finite(values: list[Any]) -> list[float]:
    """None (a non-finite value stored as null) becomes NaN, which matplotlib leaves out."""
    return [float("nan") if v is None else float(v) for v in values]
