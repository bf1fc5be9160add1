"""What every bench section shares: sizes, the run context, figures, tables and the JSON file.

A `Figure` is one measured value next to its baseline from the same run; its ratio is always
``value / baseline`` in the figure's own unit (a rate ratio above 1 means faster than the
baseline, a time or memory ratio above 1 means more). A `Goal` turns a figure into PASS or MISS;
a miss is reported, never raised.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# The code before issue #13: what the `edition` section compares this tree with by default.
DEFAULT_BASELINE = "84ac4e5"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How much work each section does. `FULL` follows the issues; `QUICK` is a smoke run."""

    users: int = 200_000  # the large data set (reader, plan)
    small_users: int = 20_000  # the small one (memory baselines, the send section's plan)
    edition_users: int = 20_000  # the whole edition, run on this tree and on the baseline
    recs: int = 500
    render_emails: int = 2_000
    engine_sends: int = 6_000
    stock_sequential: int = 100
    stock_threaded: int = 2_000
    stock_threads: int = 32
    concurrency: int = 256
    latency_ms: float = 50.0
    events: int = 50_000
    event_batch: int = 500
    rounds: int = 3  # best of N: the send figures, and the edition on each code tree


FULL = Sizes()
QUICK = Sizes(
    users=20_000,
    small_users=2_000,
    edition_users=2_000,
    render_emails=300,
    engine_sends=1_000,
    stock_sequential=20,
    stock_threaded=300,
    events=5_000,
    rounds=1,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Goal:
    """A target on a figure's value (or, with `on_ratio`, on its ratio to the baseline)."""

    target: float
    text: str
    at_least: bool = True
    on_ratio: bool = False

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        measured = ratio if self.on_ratio else value
        if measured is None:
            return None
        return measured >= self.target if self.at_least else measured <= self.target


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One measured value, its same-run baseline, and the goal it is held to (if any)."""

    key: str  # stable name for the JSON file: "plan.users_per_s"
    label: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    goal: Goal | None = None
    note: str = ""  # why a figure is missing, or how to read it
    tag: str = ""  # the status shown when there is no value ("cached"); default SKIP
    error: bool = False

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def status(self) -> str:
        if self.error:
            return "ERROR"
        if self.value is None:
            return self.tag or "SKIP"
        if self.goal is None:
            return "-"
        met = self.goal.met(self.value, self.ratio)
        return "-" if met is None else ("PASS" if met else "MISS")

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "goal": None if self.goal is None else self.goal.text,
            "status": self.status,
            "note": self.note,
        }


@dataclass(slots=True, kw_only=True)
class Section:
    """A section's figures, how they were measured, and its raw numbers for the JSON file."""

    name: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "method": self.method,
            "figures": [f.as_dict() for f in self.figures],
            "details": self.details,
        }


@dataclass(slots=True, kw_only=True)
class BenchContext:
    """What the sections share in one run: sizes, folders, the console, and memoized work."""

    sizes: Sizes
    root: Path
    cache: Path
    console: Console
    regenerate: bool = False
    baseline: str = DEFAULT_BASELINE  # a git revision
    memo: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """A progress line (dim), so a long run shows what it is doing."""
        self.console.print(f"[dim]{datetime.now():%H:%M:%S}  {text}[/dim]", highlight=False)

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per run: later sections reuse earlier measurements of one thing."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


def number(value: float | None, unit: str = "") -> str:
    """A figure for a table: thousands separators, 3 significant digits for small values."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


_STATUS_STYLE = {"PASS": "green", "MISS": "bold red", "ERROR": "bold red", "SKIP": "yellow"}


def _status(text: str) -> str:
    style = _STATUS_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def figure_table(title: str, figures: list[Figure], caption: str = "") -> Table:
    """`figure | value | baseline | ratio | goal | status` for `figures`."""
    table = Table(
        title=title, caption=caption or None, title_justify="left", caption_justify="left"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("goal")
    table.add_column("status")
    for fig in figures:
        baseline = number(fig.baseline, fig.unit)
        if fig.baseline_label and fig.baseline is not None:
            baseline = f"{baseline} ({fig.baseline_label})"
        label = fig.label + (f"\n[dim]{fig.note}[/dim]" if fig.note else "")
        table.add_row(
            label,
            number(fig.value, fig.unit),
            baseline,
            ratio_text(fig.ratio),
            fig.goal.text if fig.goal else "",
            _status(fig.status),
        )
    return table


def section_table(section: Section) -> Table:
    return figure_table(section.title, section.figures, caption=section.method)


def summary_table(sections: list[Section], note: str = "") -> Table:
    figures = [fig for section in sections for fig in section.figures]
    caption = "ratio = value / baseline, both measured in this run; a MISS never fails the run"
    return figure_table("Summary", figures, caption=f"{caption}\n{note}".strip())


def load_text(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """The machine's 1-minute load average around the run: how shared the cores were."""
    return (
        f"load average (1 min) {before[0]:.2f} at the start, {after[0]:.2f} at the end, "
        f"on {os.cpu_count()} CPUs"
    )


def report_json(
    sections: list[Section], sizes: Sizes, quick: bool, load_before: tuple[float, ...]
) -> dict[str, Any]:
    """Everything measured, for `--json FILE`."""
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "sizes": {name: getattr(sizes, name) for name in sizes.__dataclass_fields__},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in load_before],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sections": {s.name: s.as_dict() for s in sections},
        "figures": [f.as_dict() for s in sections for f in s.figures],
    }
