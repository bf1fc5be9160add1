"""A plan as others read it: the plan file (JSON Lines or Parquet, one row per user, the same
bytes for the same inputs) and one user's trace as text (``calm-mail plan --explain``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from calm_mail.inputs.writes import write_output
from calm_mail.plan.planner import PlanResult
from calm_mail.plan.user import UserTrace
from calm_mail.records import TraceStep


def plan_rows(result: PlanResult) -> Iterator[dict[str, Any]]:
    """One row per user, sorted by user id: the delivery, or the reason for no email."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for d in result.deliveries:
        rows.append(
            (
                d.user_id,
                {
                    "user_id": d.user_id,
                    "excluded": None,
                    "arm": d.arm,
                    "source": str(d.source),
                    "fallback": d.fallback,
                    "item_ids": list(d.item_ids),
                    "locale": d.locale,
                    "send_at": d.send_at,
                    "timezone": d.timezone,
                },
            )
        )
    for x in result.exclusions:
        rows.append(
            (
                x.user_id,
                {
                    "user_id": x.user_id,
                    "excluded": x.reason,
                    "arm": None,
                    "source": None,
                    "fallback": False,
                    "item_ids": [],
                    "locale": None,
                    "send_at": None,
                    "timezone": None,
                },
            )
        )
    rows.sort(key=lambda r: r[0])
    return (row for _, row in rows)


def write_plan(result: PlanResult, path: Path | str) -> Path:
    """Write the plan: JSON Lines, or Parquet when the name ends in ``.parquet``. Same inputs,
    same bytes. Addresses are left out (the ledger holds them). ``-`` is standard output.

    By the rule of `calm_mail.inputs.writes`: a regular file is replaced atomically (keeping
    its mode), a device or pipe is written straight through, a directory is refused
    (`OutputError`, exit 2)."""
    path = Path(path)
    if path.suffix == ".parquet":
        write_output(path, lambda stream: _write_parquet(result, stream))
    else:
        write_output(path, lambda stream: _write_lines(result, stream))
    return path


def _write_lines(result: PlanResult, stream: BinaryIO) -> None:
    for row in plan_rows(result):
        stream.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z))
        stream.write(b"\n")


def _write_parquet(result: PlanResult, stream: BinaryIO) -> None:
    # pyarrow is slow to import: only a Parquet plan pays for it
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(plan_rows(result))
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("excluded", pa.string()),
            ("arm", pa.string()),
            ("source", pa.string()),
            ("fallback", pa.bool_()),
            ("item_ids", pa.list_(pa.string())),
            ("locale", pa.string()),
            ("send_at", pa.timestamp("us", tz="UTC")),
            ("timezone", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, stream, compression="zstd")


def explain(result: PlanResult, user_id: str) -> str:
    """One user's full trace as text: eligibility, arm and why, source, every step, fallback."""
    return format_trace(result.explain(user_id))


def format_trace(t: UserTrace, *, max_drops: int = 12) -> str:
    lines = [f"user {t.user_id}: {t.outcome}"]
    if t.outcome.startswith("not in the audience"):
        return lines[0]
    lines.append(f"  eligibility: {t.eligibility or 'eligible'}")
    if t.arm:
        lines.append(f"  arm: {t.arm} ({t.arm_why})")
    if t.source:
        lines.append(f"  source: {t.source}, {t.candidates} candidate(s)")
    lines += _format_steps(t.steps, max_drops)
    if t.fallback:
        lines.append(f"  fallback: {t.fallback_why}")
        lines += _format_steps(t.fallback_steps, max_drops)
    if t.send_at is not None:
        lines.append(f"  items: {', '.join(t.item_ids) or '(none)'}")
        lines.append(f"  send at: {t.send_at:%Y-%m-%d %H:%M} UTC (zone {t.timezone})")
    return "\n".join(lines)


def _format_steps(steps: Iterable[TraceStep], max_drops: int) -> list[str]:
    lines = []
    for s in steps:
        lines.append(f"    {s.step}: {s.note}")
        for item_id, why in s.dropped[:max_drops]:
            lines.append(f"      - {item_id}: {why}")
        if len(s.dropped) > max_drops:
            lines.append(f"      ... and {len(s.dropped) - max_drops} more")
    return lines
