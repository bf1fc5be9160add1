"""The experiment report: per-arm metrics turned into an honest verdict, and three renderings.

`build_report` (build.py) turns `EditionMetrics` and the experiment into a frozen `Report`
(model.py) whose verdict is written by verdict.py. Renderings: `render_terminal` (rich tables,
terminal.py), `to_json` (orjson, sorted keys, serialize.py) and `render_html` (one
self-contained page, html_page.py).
"""

from __future__ import annotations

from calm_mail.analyze.report.build import build_report
from calm_mail.analyze.report.html_page import render_html
from calm_mail.analyze.report.model import Comparison, Report, SrmCheck
from calm_mail.analyze.report.serialize import as_dict, to_json
from calm_mail.analyze.report.terminal import render_terminal

__all__ = [
    "Comparison",
    "Report",
    "SrmCheck",
    "as_dict",
    "build_report",
    "render_html",
    "render_terminal",
    "to_json",
]
