"""Plots for the HTML reports: matplotlib figures rendered as inline SVG strings.

Both reports (``data_report.html`` and ``eval/report.html``) and the sweep page draw through this
module, so every chart on every page shares one style (:data:`RC`) and one way into the page
(:func:`svg`): no XML prolog or DOCTYPE, ids prefixed per figure so several plots can share a
page, text drawn as glyph paths (the same on every machine, nothing to escape or inject).

Figures are ``matplotlib.figure.Figure`` objects rendered by the SVG canvas of the Agg-family
backends: nothing goes through pyplot, so no global figure list grows and nothing needs closing.
The evaluation curves are scikit-learn's own displays (:class:`~sklearn.metrics.RocCurveDisplay`,
:class:`~sklearn.metrics.PrecisionRecallDisplay`, :class:`~sklearn.calibration.CalibrationDisplay`,
:class:`~sklearn.metrics.ConfusionMatrixDisplay`) drawn onto an axes of ours.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import Markup

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "path",  # text as glyph paths: the same on every machine, nothing to inject
    "text.parse_math": False,  # a label with "$" is text, not mathtext
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.labelsize": 9,
    "axes.edgecolor": "#98a2b3",
    "axes.labelcolor": "#344054",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#eaecf0",
    "grid.linewidth": 0.8,
    "xtick.color": "#475467",
    "ytick.color": "#475467",
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.frameon": True,
    "legend.framealpha": 0.92,
    "legend.edgecolor": "#eaecf0",
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}
CHANCE = {"ls": "--", "lw": 0.9, "color": "#98a2b3"}
BAR_COLOUR = "#1570ef"

_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


@contextmanager
def style() -> Iterator[None]:
    """The reports' matplotlib style, with the Agg backend's warnings (empty legends, ...) muted."""
    import matplotlib

    with matplotlib.rc_context(RC), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg(fig: Any, name: str, *, css_class: str = "plot", svg_id: str | None = None) -> Markup:
    """The figure as an inline ``<svg>``: no XML prolog or DOCTYPE, ids made unique on the page."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"tuneline-{name}"}):
        fig.savefig(
            buf,
            format="svg",
            bbox_inches="tight",
            pad_inches=0.04,
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", name)
    referenced = {m.group(2) for m in _REF.finditer(text)}

    def rename_id(m: re.Match[str]) -> str:
        return f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else ""

    text = _ID.sub(rename_id, text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    head = f'<svg id="{svg_id}" ' if svg_id else "<svg "
    text = re.sub(r"<svg ", f'{head}class="{css_class}" role="img" aria-label="{prefix}" ', text, count=1)
    return Markup(text.strip())


def legend(ax: Any, loc: str) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc=loc, handlelength=1.8, borderpad=0.5, labelspacing=0.35)


def _unit_square(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


# --------------------------------------------------------------------------------------------------
# evaluation curves (scikit-learn displays)


def roc(
    series: Sequence[dict[str, Any]], *, name: str = "roc", xlabel: str, ylabel: str, legend_at: int = 12
) -> Markup | None:
    """ROC curves, one per series ``{"label", "y", "score", "colour", "lw", "point": (x, y) | None}``.

    The legend names each curve with its AUC; ``point`` marks an operating point on it.
    """
    from sklearn.metrics import RocCurveDisplay

    if not series:
        return None
    fig = figure(3.7, 3.55)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="chance" if series[0].get("chance", True) else None, **CHANCE)
    _curves(ax, series, RocCurveDisplay, lambda d: f"AUC {d.roc_auc:.3f}")
    _unit_square(ax, xlabel, ylabel)
    if len(series) <= legend_at:
        legend(ax, "lower right")
    elif ax.get_legend() is not None:
        ax.get_legend().remove()
    return svg(fig, name)


def _curves(ax: Any, series: Sequence[dict[str, Any]], display: Any, summary: Any) -> None:
    """One scikit-learn curve display per series on ``ax``: its colour and width, the legend label with
    ``summary(display)``, its z-order and, where given, the operating point."""
    for s in series:
        d = display.from_predictions(
            s["y"], s["score"], pos_label=1, ax=ax, curve_kwargs={"color": s["colour"], "lw": s["lw"]}
        )
        d.line_.set_label(f"{s['label']}  {summary(d)}")
        d.line_.set_zorder(s.get("zorder", 2))
        if s.get("point") is not None:
            ax.plot(*s["point"], "o", ms=6, color=s["colour"], mec="white", mew=1.2, zorder=4)


def precision_recall(series: Sequence[dict[str, Any]], *, prevalence: float | None) -> Markup | None:
    """Precision–recall curves (steps), the legend with each one's average precision (AP)."""
    from sklearn.metrics import PrecisionRecallDisplay

    if not series:
        return None
    fig = figure(3.7, 3.55)
    ax = fig.subplots()
    _curves(ax, series, PrecisionRecallDisplay, lambda d: f"AP {d.average_precision:.3f}")
    if prevalence is not None:
        ax.axhline(prevalence, label=f"prevalence {prevalence:.3f}", **CHANCE)
    _unit_square(ax, "Recall (sensitivity)", "Precision (PPV)")
    legend(ax, "best")
    return svg(fig, "pr")


def calibration(series: Sequence[dict[str, Any]], *, n_bins: int, ylabel: str, xlabel: str) -> Markup | None:
    """Reliability diagram (scikit-learn's CalibrationDisplay) over a histogram of the probabilities."""
    from sklearn.calibration import CalibrationDisplay

    if not series:
        return None
    fig = figure(3.7, 3.55)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.6, 1]})
    ax.plot([0, 1], [0, 1], label="perfectly calibrated", **CHANCE)
    bins = np.linspace(0, 1, n_bins + 1)
    for s in series:
        d = CalibrationDisplay.from_predictions(
            s["y"], s["p"], n_bins=n_bins, strategy="uniform", pos_label=1, ax=ax, ref_line=False,
            marker="o", lw=s["lw"], ms=3.5, color=s["colour"], zorder=s.get("zorder", 2),
        )  # fmt: skip
        d.line_.set_label(s["label"])
        hist.hist(s["p"], bins=bins, histtype="step", lw=s["lw"] * 0.7, color=s["colour"])
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    legend(ax, "best")
    hist.set_xlabel(xlabel)
    hist.set_ylabel("Records")
    hist.grid(axis="x", visible=False)
    return svg(fig, "calibration")


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def confusion(name: str, matrix: np.ndarray, labels: Sequence[str], colour: str) -> tuple[Markup, int]:
    """One model's heatmap (colour: share of the true class; text: count and share) and its width in px.

    The matrix comes from ``report.json`` or the predictions, so this draws a
    :class:`~sklearn.metrics.ConfusionMatrixDisplay` of the row shares and writes the counts itself.
    """
    from matplotlib.colors import LinearSegmentedColormap
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(labels)
    side = min(7.0, max(2.5, 0.5 * k + 1.4))
    fig = figure(side, side * 0.92)
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    ticks = [_short(str(x)) for x in labels]
    ConfusionMatrixDisplay(share, display_labels=ticks).plot(
        ax=ax,
        include_values=False,
        colorbar=False,
        cmap=LinearSegmentedColormap.from_list("tl", ["#ffffff", colour]),
        xticks_rotation=0 if k <= 4 else 45,
        im_kw={"vmin": 0, "vmax": 1},
    )
    ax.grid(False)
    if k <= 15:
        size = 9 if k <= 4 else (7.5 if k <= 8 else 6)
        for i in range(k):
            for j in range(k):
                text = f"{int(matrix[i, j]):,}"
                if k <= 6 and totals[i, 0] > 0:
                    text += f"\n{share[i, j] * 100:.0f}%"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=size, linespacing=1.15,
                    color="white" if share[i, j] > 0.55 else "#101828",
                    fontweight="bold" if i == j else "normal",
                )  # fmt: skip
    if k > 4:
        for t in ax.get_xticklabels():
            t.set_ha("right")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return svg(fig, f"confusion-{name}"), round(side * 96)


# --------------------------------------------------------------------------------------------------
# data report


def _short_number(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 10_000:
        return f"{v / 1000:g}k"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:g}"


def histogram(
    counts: Sequence[int], edge_labels: Sequence[str], *, name: str, single: bool, xlabel: str
) -> Markup:
    """Pre-binned counts as equal-width bars (bins may be uneven, e.g. half-octaves of pixel sizes).

    ``edge_labels`` has one label per bin edge (``single``: one per bin, under its centre). Bars
    carry their count above them when there is room.
    """
    n = len(counts)
    fig = figure(5.8, 2.3)
    ax = fig.subplots()
    x = np.arange(n)
    bars = ax.bar(x, counts, width=0.86 if n > 8 else 0.8, color=BAR_COLOUR, zorder=2)
    ax.grid(axis="x", visible=False)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.yaxis.set_major_formatter(_formatter(_short_number))
    ax.yaxis.set_major_locator(_max_ticks(4))
    every = max(1, math.ceil(n / 16))
    pos: np.ndarray
    if single:
        pos, text = x, list(edge_labels)
    else:
        pos, text = np.arange(n + 1) - 0.5, list(edge_labels)
    ax.set_xticks(pos[::every], text[::every])
    ax.set_xlim(-0.6, n - 0.4)
    if n <= 16:
        ax.bar_label(bars, labels=[_short_number(c) if c else "" for c in counts], fontsize=7.5, padding=2)
    ax.margins(y=0.12)
    ax.set_xlabel(xlabel)
    return svg(fig, name, css_class="chart histogram")


def _formatter(fn: Any) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fn(v))


def _max_ticks(n: int) -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=n, integer=True, min_n_ticks=2)


def nice_step(span: float, target: int) -> float:
    """A 1/2/5 × 10^k step that cuts ``span`` into about ``target`` pieces."""
    if span <= 0:
        return 1.0
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


def ticks(top: float, target: int = 4) -> tuple[float, list[float]]:
    """Axis maximum and tick values for data in ``[0, top]``."""
    step = nice_step(top, target)
    axis_max = max(step, math.ceil(top / step) * step)
    return axis_max, [step * i for i in range(int(round(axis_max / step)) + 1)]


def grouped_bars(
    groups: Sequence[tuple[str, Sequence[dict[str, Any]]]], tick_label: Any, width: int = 560
) -> dict[str, Any]:
    """Layout of a grouped horizontal bar chart, drawn by the template as one ``<rect>`` per bar.

    ``groups`` is ``[(label, [{"value": share, "n": count, "fill", "title", "text", "flag"}, ...])]``.
    The data report keeps this chart as plain SVG elements (one per bar, each with a hover title)
    instead of a matplotlib figure, so a reader can point at a bar and read its count.
    """
    left, right = 150, 52
    bar_h, bar_gap, group_gap, top_pad = 9, 2, 10, 22
    plot_w = width - left - right
    peak = max((b["value"] or 0) for _, bars in groups for b in bars) or 1.0
    axis_max, tick_values = ticks(peak, 4)
    out_bars, texts = [], []
    y = float(top_pad)
    for label, bars in groups:
        group_h = len(bars) * (bar_h + bar_gap) - bar_gap
        texts.append({"x": left - 8, "y": y + group_h / 2 + 4, "text": label, "full": label})
        for b in bars:
            w = plot_w * (b["value"] or 0.0) / axis_max
            out_bars.append(
                {**b, "x": left, "y": y, "w": max(w, 1.0 if b["n"] else 0.0), "h": bar_h}
                | {"tx": left + w + 4, "ty": y + bar_h - 1}
            )
            y += bar_h + bar_gap
        y += group_gap - bar_gap
    return {
        "width": width,
        "height": y + 4,
        "left": left,
        "plot_w": plot_w,
        "bars": out_bars,
        "texts": texts,
        "grid": [{"x": left + plot_w * t / axis_max, "label": tick_label(t)} for t in tick_values],
        "top_pad": top_pad,
    }
