"""The report pages come from templates shipped as package data, not from strings in Python."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import PackageLoader

import tuneline
from tuneline import plots
from tuneline.data.report_html import render_html_string

SRC = Path(tuneline.__file__).resolve().parent


def test_no_template_or_css_inside_a_python_module():
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if re.search(r"<style|<html|<!DOCTYPE html", p.read_text(encoding="utf-8"), re.I)
    ]
    assert offenders == []


def test_templates_ship_with_the_package_and_share_one_base():
    names = PackageLoader("tuneline", "templates").list_templates()
    assert {"_base.html.j2", "data_report.html.j2", "eval_report.html.j2"} <= set(names)
    for name in ("data_report.html.j2", "eval_report.html.j2"):
        text = (SRC / "templates" / name).read_text(encoding="utf-8")
        assert '{% extends "_base.html.j2" %}' in text
        assert "section.card {" not in text  # the shared CSS is in the base only


def test_a_page_has_one_stylesheet_with_the_shared_rules_once():
    html = render_html_string({"summary": {"records_in": 1, "records_out": 1}, "findings": []}, {})
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<style>") == 1
    assert html.count("section.card {") == 1
    assert html.count('<header class="top">') == 1


def test_histogram_is_an_inline_svg_with_page_unique_ids():
    with plots.style():
        a = plots.histogram([3, 0, 7], ["16", "24", "32", "48"], name="a", single=False, xlabel="pixels")
        b = plots.histogram([3, 0, 7], ["16", "24", "32", "48"], name="b", single=False, xlabel="pixels")
    for svg in (a, b):
        assert svg.startswith("<svg ") and 'class="chart histogram"' in svg
        assert "<?xml" not in svg and "<!DOCTYPE" not in svg
    ids = re.findall(r'\sid="([^"]+)"', a + b)
    assert ids and len(ids) == len(set(ids))
