"""report.html of a sweep: the frontier plot (metric with CI against cost) and the trial table.

The template lives in tuneline/templates/sweep_report.html.j2 (package data, loaded with PackageLoader);
the plot is an inline SVG drawn by the same helpers as the evaluation report.
"""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def plot(frontier: dict) -> Markup:
    from tuneline.plots import figure as _figure
    from tuneline.plots import svg as _svg

    cost = frontier["cost_metric"]
    rows = [t for t in frontier["trials"] if t["metric"] is not None and t.get(cost) is not None]
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    for t in rows:
        low, high = t["ci"]
        err = None if low is None else [[t["metric"] - low], [high - t["metric"]]]
        colour = "#2e7d32" if t["key"] == frontier["recommended"] else "#1f77b4" if t["pareto"] else "#999"
        ax.errorbar(t[cost], t["metric"], yerr=err, fmt="o", color=colour, capsize=3)
        ax.annotate(t["key"], (t[cost], t["metric"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = sorted((t[cost], t["metric"]) for t in rows if t["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), "--", color="#1f77b4", linewidth=0.8)
    ax.set_xlabel(cost)
    ax.set_ylabel(frontier["metric"])
    ax.set_title("frontier (green: recommended, blue: Pareto-optimal)", fontsize=9)
    return _svg(fig, "sweep-frontier")


def render(frontier: dict) -> str:
    env = Environment(
        loader=PackageLoader("tuneline", "templates"), autoescape=True, undefined=StrictUndefined
    )
    return env.get_template("sweep_report.html.j2").render(f=frontier, num=_num, plot=plot(frontier))
