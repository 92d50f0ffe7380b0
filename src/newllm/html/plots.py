"""Matplotlib helpers shared by the run report and the comparison of experiments: figures with
one style, inline PNGs (data URIs), reference lines and bands."""
from __future__ import annotations

import base64
import io
from typing import Any

from newllm.html.common import esc
from newllm.values import num


def figure(nrows: int, ncols: int, width: float = 11.0, height: float = 3.6):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=9)
    return fig, axes


def png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{png_data_uri(fig)}">'


def xy(xs: list, ys: list, positive: bool = False) -> tuple[list, list]:
    out_x, out_y = [], []
    for x, y in zip(xs, ys):
        if x is None or y is None or (positive and y <= 0):
            continue
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y


def empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888", fontsize=11)


def hline(ax, y: Any, label: str, color: str, style: str = "--") -> None:
    f = num(y)
    if f is not None:
        ax.axhline(f, color=color, linestyle=style, linewidth=1.2, label=label)


def band(ax, lo: float, hi: float, label: str) -> None:
    ax.axhspan(lo, hi, color="#f2c744", alpha=0.18, label=label, linewidth=0)


