"""The report as JSON: plain data with each effect's and SRM check's derived flags, sorted keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from calm_mail.analyze.report.model import Report, SrmCheck
from calm_mail.analyze.stats import Effect
from calm_mail.plan.srm import SrmResult


def as_dict(report: Report) -> dict[str, Any]:
    """The report as plain data: dataclasses to dicts, with each Effect's derived flags."""
    data = _plain(report)
    assert isinstance(data, dict)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Effect):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {**fields, "significant": value.significant(), "spans_zero": value.spans_zero}
    if isinstance(value, SrmResult | SrmCheck):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {**fields, "flagged": value.flagged}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def to_json(report: Report) -> str:
    """Stable JSON: sorted keys, two-space indent, a trailing newline."""
    options = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(as_dict(report), option=options).decode()
