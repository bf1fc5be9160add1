"""Attribution: join deliveries, webhook events and in-app completions into per-arm metrics.

Two steps with a clean seam between them:

- `load_frames` reads the ledger's tables with SQL (SQLAlchemy Core selects, ``pandas.read_sql``)
  into `Frames` — the only place that knows about the database;
- `compute_metrics` is pure over those DataFrames and vectorized (``merge_asof``/``groupby``):
  no Python loop per user.

Definitions (one row per delivery, i.e. per user and edition):

- a *human open* is an ``opened`` event with ``machine_open`` false (Apple Mail Privacy
  Protection opens are counted apart and never as human);
- *within W hours of an anchor* means a completion at ``anchor <= t < anchor + W``;
- the open-anchored metrics are intent to treat: the denominator is every assigned recipient of
  the arm, and a non-opener counts as not completing; the per-opener variant divides by openers;
- the delivery anchor is the first ``delivered`` event, else the planned ``send_at``; holdout
  users (no email) are anchored on their planned ``send_at``, so the delivery-anchored and 7-day
  metrics apply to them and the open-anchored ones do not;
- *days engaged* counts distinct 24-hour days after ``send_at`` (day k covers
  ``[send_at + k·24h, send_at + (k+1)·24h)``, k < 7) with at least one completion.

When several editions are pooled (an experiment), each user is one observation: the user's
metrics are averaged over the editions they were in (experiment-stats.md §0.6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from calm_mail.analyze.stats import ArmStat, mean_stat, proportion_stat
from calm_mail.errors import InputError, UsageError
from calm_mail.records import ContentSource, DeliveryState, EventType
from calm_mail.store import schema

HOLDOUT_REASON = "holdout"

DELIVERY_COLUMNS = (
    "delivery_id",
    "edition",
    "user_id",
    "arm",
    "source",
    "fallback",
    "state",
    "last_error",
    "send_at",
    "sent_at",
    "item_ids",
)
EVENT_COLUMNS = ("delivery_id", "event_type", "occurred_at", "machine_open")
COMPLETION_COLUMNS = ("user_id", "item_id", "completed_at")

_BOUNCES = (EventType.BOUNCED.value, EventType.BLOCKED.value)
_UNSUBSCRIBES = (EventType.UNSUBSCRIBED.value, EventType.GROUP_UNSUBSCRIBED.value)
# The event types attribution reads (processed, deferred, ... are not needed).
USED_EVENT_TYPES = (
    EventType.DELIVERED.value,
    EventType.DROPPED.value,
    EventType.OPENED.value,
    EventType.CLICKED.value,
    EventType.SPAM_REPORT.value,
    *_BOUNCES,
    *_UNSUBSCRIBES,
)


@dataclass(frozen=True, slots=True)
class Frames:
    """The tables attribution reads, as DataFrames (columns: the ``*_COLUMNS`` tuples).

    ``item_ids`` holds a tuple/list of the emailed item ids per delivery; datetimes may be any
    tz-aware or UTC-naive representation pandas parses (they are normalized to UTC).
    """

    campaign: str
    editions: tuple[str, ...]
    deliveries: pd.DataFrame
    events: pd.DataFrame
    completions: pd.DataFrame


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributionConfig:
    window_hours: float = 24.0
    days_after_send: int = 7
    hours_after_send: int = 48  # length of the completions-by-hour curve

    def __post_init__(self) -> None:
        if self.window_hours <= 0:
            raise UsageError(f"--window-hours must be > 0, got {self.window_hours}")
        if self.days_after_send < 1 or self.hours_after_send < 1:
            raise UsageError("days_after_send and hours_after_send must be >= 1")


Population = Literal["assigned", "openers"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricDef:
    key: str
    label: str
    short: str  # for the verdict sentence: "completion within 24 h of opening"
    kind: Literal["proportion", "mean"]
    population: Population
    open_anchored: bool  # does not apply to holdout users


def metric_defs(config: AttributionConfig) -> tuple[MetricDef, ...]:
    """The metrics in report order; the first is the primary one."""
    w = f"{config.window_hours:g} h"
    return (
        MetricDef(
            key="completed_after_open",
            kind="proportion",
            population="assigned",
            open_anchored=True,
            short=f"completion within {w} of opening",
            label=f"Completed any content within {w} of opening (per recipient, ITT)",
        ),
        MetricDef(
            key="completed_after_open_openers",
            kind="proportion",
            population="openers",
            open_anchored=True,
            short=f"completion within {w} of opening, per opener",
            label=f"Completed any content within {w} of opening (per opener)",
        ),
        MetricDef(
            key="completed_emailed_after_open",
            kind="proportion",
            population="assigned",
            open_anchored=True,
            short=f"completion of an emailed item within {w} of opening",
            label=f"Completed an emailed item within {w} of opening (per recipient)",
        ),
        MetricDef(
            key="completed_after_delivery",
            kind="proportion",
            population="assigned",
            open_anchored=False,
            short=f"completion within {w} of delivery",
            label=f"Completed any content within {w} of delivery (immune to machine opens)",
        ),
        MetricDef(
            key="days_engaged",
            kind="mean",
            population="assigned",
            open_anchored=False,
            short=f"days engaged in the {config.days_after_send} days after the send",
            label=f"Distinct days with a completion in the {config.days_after_send} days "
            "after the send (mean per user)",
        ),
    )


FUNNEL = (
    "assigned",
    "sent",
    "delivered",
    "bounced",
    "dropped",
    "opened",
    "machine_opened",
    "clicked",
    "unsubscribed",
    "spam_reports",
    "fallback",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmMetrics:
    """One arm's funnel (counts of deliveries), its users and its metric summaries.

    ``stats`` has no entry for a metric that does not apply (open-anchored ones for a holdout).
    ``completions_by_hour[h]`` is completions in hour h after send_at per 1,000 assigned.
    """

    arm: str
    holdout: bool
    users: int
    funnel: Mapping[str, int]
    stats: Mapping[str, ArmStat]
    completions_by_hour: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EditionMetrics:
    campaign: str
    editions: tuple[str, ...]
    pooled: bool
    config: AttributionConfig
    metrics: tuple[MetricDef, ...]
    arms: tuple[ArmMetrics, ...]
    notes: tuple[str, ...] = field(default=())

    def arm(self, name: str) -> ArmMetrics | None:
        return next((a for a in self.arms if a.arm == name), None)


# --------------------------------------------------------------------------- pure computation


def compute_metrics(
    frames: Frames, config: AttributionConfig | None = None, *, pooled: bool | None = None
) -> EditionMetrics:
    """Per-arm funnel and metric summaries. ``pooled`` defaults to "more than one edition"."""
    config = config or AttributionConfig()
    pooled = len(frames.editions) > 1 if pooled is None else pooled
    outcomes, completions = _outcomes(frames, config)
    defs = metric_defs(config)
    notes: list[str] = []
    per_user, changed = _per_user(outcomes, defs) if pooled else (outcomes, 0)
    if changed:
        notes.append(f"{changed} users changed arm between editions; counted in their first arm")
    hourly = _completions_by_hour(outcomes, completions, config)
    arms = []
    for arm, rows in outcomes.groupby("arm", sort=True):
        users = per_user[per_user["arm"] == arm]
        arms.append(
            ArmMetrics(
                arm=str(arm),
                holdout=bool(rows["holdout"].all()),
                users=int(rows["user"].nunique()),
                funnel={name: int(rows[name].sum()) for name in FUNNEL},
                stats=_arm_stats(users, defs, pooled, holdout=bool(rows["holdout"].all())),
                completions_by_hour=tuple(
                    float(v) for v in hourly.get(str(arm), np.zeros(config.hours_after_send))
                ),
            )
        )
    return EditionMetrics(
        campaign=frames.campaign,
        editions=frames.editions,
        pooled=pooled,
        config=config,
        metrics=defs,
        arms=tuple(arms),
        notes=tuple(notes),
    )


def delivery_outcomes(frames: Frames, config: AttributionConfig) -> pd.DataFrame:
    """One row per delivery: arm, flags of the funnel and each metric's value for that user."""
    return _outcomes(frames, config)[0]


def _outcomes(frames: Frames, config: AttributionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = _deliveries(frames.deliveries)
    users = pd.Index(d["user_id"].unique())
    d["user"] = users.get_indexer(pd.Index(d["user_id"]))
    _add_event_flags(d, _events(frames.events, d))
    completions = _completions(frames.completions, users)
    window = pd.Timedelta(hours=config.window_hours)
    opened = d["first_open"].notna().to_numpy()
    after_open = _completed_within(d.loc[opened, ["user", "first_open"]], completions, window)
    d["completed_after_open"] = _scatter(len(d), np.flatnonzero(opened), after_open)
    emailed = _completed_emailed_within(d.loc[opened], completions, window)
    d["completed_emailed_after_open"] = _scatter(len(d), np.flatnonzero(opened), emailed)
    anchor = d["first_delivered"].fillna(d["send_at"])
    d["completed_after_delivery"] = _completed_within(
        pd.DataFrame({"user": d["user"], "anchor": anchor}), completions, window
    )
    d["days_engaged"] = _days_engaged(d, completions, config.days_after_send)
    return d, completions


def _scatter(size: int, positions: np.ndarray, values: np.ndarray | np.bool_) -> np.ndarray:
    out = np.zeros(size, dtype=bool)
    out[positions] = values
    return out


def _utc(values: pd.Series) -> pd.Series:
    """Any datetime column as naive UTC datetime64[ns] (naive input is taken as UTC).

    Internally times stay naive so numpy arrays of them are datetime64, not Timestamp objects.
    """
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return parsed.dt.tz_localize(None).dt.as_unit("ns")


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{name} frame lacks columns {missing}", path=name)


def _deliveries(raw: pd.DataFrame) -> pd.DataFrame:
    _require(raw, DELIVERY_COLUMNS, "deliveries")
    d = raw.loc[:, list(DELIVERY_COLUMNS)].reset_index(drop=True)
    d["send_at"] = _utc(d["send_at"])
    d["sent_at"] = _utc(d["sent_at"])
    d["fallback"] = d["fallback"].astype(bool)
    d["holdout"] = (d["source"] == ContentSource.HOLDOUT.value) | (
        (d["state"] == DeliveryState.SKIPPED.value) & (d["last_error"] == HOLDOUT_REASON)
    )
    d["assigned"] = True
    d["sent"] = d["state"] == DeliveryState.SENT.value
    return d


def _events(raw: pd.DataFrame, d: pd.DataFrame) -> pd.DataFrame:
    """The events that join to a delivery, with ``row`` = that delivery's position in ``d``."""
    _require(raw, EVENT_COLUMNS, "events")
    rows = pd.Index(d["delivery_id"]).get_indexer(pd.Index(raw["delivery_id"]))
    keep = rows >= 0
    return pd.DataFrame(
        {
            "row": rows[keep],
            "event_type": raw["event_type"].to_numpy()[keep],
            "occurred_at": _utc(raw["occurred_at"]).to_numpy()[keep],
            "machine_open": raw["machine_open"].to_numpy()[keep].astype(bool),
        }
    )


def _add_event_flags(d: pd.DataFrame, ev: pd.DataFrame) -> None:
    kind = ev["event_type"]
    human_open = (kind == EventType.OPENED.value) & ~ev["machine_open"]
    flags: Mapping[str, pd.Series] = {
        "delivered_flag": kind == EventType.DELIVERED.value,
        "bounced": kind.isin(_BOUNCES),
        "dropped": kind == EventType.DROPPED.value,
        "opened": human_open,
        "machine_opened": (kind == EventType.OPENED.value) & ev["machine_open"],
        "clicked": kind == EventType.CLICKED.value,
        "unsubscribed": kind.isin(_UNSUBSCRIBES),
        "spam_reports": kind == EventType.SPAM_REPORT.value,
    }
    for name, mask in flags.items():
        d[name] = _scatter(len(d), ev.loc[mask, "row"].to_numpy(), np.True_)
    d["delivered"] = d.pop("delivered_flag")
    d["first_open"] = _first_time(len(d), ev[human_open])
    d["first_delivered"] = _first_time(len(d), ev[kind == EventType.DELIVERED.value])


def _first_time(size: int, ev: pd.DataFrame) -> pd.Series:
    first = ev.groupby("row")["occurred_at"].min()
    out = np.full(size, np.datetime64("NaT"), dtype="datetime64[ns]")
    out[first.index.to_numpy()] = first.to_numpy()
    return pd.Series(out)


def _completions(raw: pd.DataFrame, users: pd.Index) -> pd.DataFrame:
    """Completions of known users as (user code, item, t), sorted by t."""
    _require(raw, COMPLETION_COLUMNS, "completions")
    codes = users.get_indexer(pd.Index(raw["user_id"]))
    keep = codes >= 0
    out = pd.DataFrame(
        {
            "user": codes[keep],
            "item": raw["item_id"].to_numpy()[keep],
            "t": _utc(raw["completed_at"]).to_numpy()[keep],
        }
    )
    return out.sort_values("t", kind="stable", ignore_index=True)


def _completed_within(
    anchors: pd.DataFrame, completions: pd.DataFrame, window: pd.Timedelta
) -> np.ndarray:
    """For each (user, anchor) row: is there a completion in [anchor, anchor + window)?"""
    left = pd.DataFrame(
        {
            "pos": np.arange(len(anchors)),
            "user": anchors.iloc[:, 0].to_numpy(),
            "t": anchors.iloc[:, 1].to_numpy(),
        }
    )
    right = completions[["user", "t"]].assign(done=completions["t"])
    joined = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        right,
        on="t",
        by="user",
        direction="forward",
        allow_exact_matches=True,
    )
    hit = (joined["done"] < joined["t"] + window).to_numpy(dtype=bool, na_value=False)
    out = np.zeros(len(anchors), dtype=bool)
    out[joined["pos"].to_numpy()] = hit
    return out


def _completed_emailed_within(
    opened: pd.DataFrame, completions: pd.DataFrame, window: pd.Timedelta
) -> np.ndarray:
    """For each opened delivery: a completion of one of its emailed items within the window."""
    items = pd.DataFrame(
        {
            "pos": np.arange(len(opened)),
            "user": opened["user"].to_numpy(),
            "item": opened["item_ids"].to_numpy(),
            "t": opened["first_open"].to_numpy(),
        }
    ).explode("item")
    items = items[items["item"].notna()]
    item_codes = pd.Index(pd.unique(items["item"]))
    items["item"] = item_codes.get_indexer(pd.Index(items["item"]))
    done = completions.assign(item=item_codes.get_indexer(pd.Index(completions["item"])))
    done = done[done["item"] >= 0]
    right = done[["user", "item", "t"]].assign(done=done["t"])
    joined = pd.merge_asof(
        items.sort_values("t", kind="stable"),
        right,
        on="t",
        by=["user", "item"],
        direction="forward",
    )
    hit = (joined["done"] < joined["t"] + window).to_numpy(dtype=bool, na_value=False)
    out = np.zeros(len(opened), dtype=bool)
    out[joined["pos"].to_numpy()[hit]] = True
    return out


def _in_days_after_send(d: pd.DataFrame, completions: pd.DataFrame, days: int) -> pd.DataFrame:
    """Completions joined to the deliveries of their user, kept within ``days`` after send_at."""
    span = pd.Timedelta(days=days)
    lo, hi = d["send_at"].min(), d["send_at"].max() + span
    recent = completions[(completions["t"] >= lo) & (completions["t"] < hi)]
    left = pd.DataFrame(
        {
            "row": np.arange(len(d)),
            "user": d["user"].to_numpy(),
            "send_at": d["send_at"].to_numpy(),
            "arm": d["arm"].to_numpy(),
        }
    )
    joined = left.merge(recent[["user", "t"]], on="user", how="inner")
    since = joined["t"] - joined["send_at"]
    return joined[(since >= pd.Timedelta(0)) & (since < span)].assign(since=since)


def _days_engaged(d: pd.DataFrame, completions: pd.DataFrame, days: int) -> np.ndarray:
    joined = _in_days_after_send(d, completions, days)
    day = joined["since"].to_numpy() // np.timedelta64(1, "D")
    distinct = pd.DataFrame({"row": joined["row"], "day": day}).drop_duplicates()
    counts = distinct.groupby("row").size()
    out = np.zeros(len(d), dtype=np.int64)
    out[counts.index.to_numpy()] = counts.to_numpy()
    return out


def _completions_by_hour(
    d: pd.DataFrame, completions: pd.DataFrame, config: AttributionConfig
) -> dict[str, np.ndarray]:
    """Completions per hour after send_at, per 1,000 assigned deliveries of each arm."""
    hours = config.hours_after_send
    joined = _in_days_after_send(d, completions, days=-(-hours // 24))
    hour = joined["since"].to_numpy() // np.timedelta64(1, "h")
    joined = joined.assign(hour=hour)[hour < hours]
    assigned = d.groupby("arm").size()
    out: dict[str, np.ndarray] = {}
    for arm, group in joined.groupby("arm"):
        counts = np.bincount(group["hour"].to_numpy(dtype=np.int64), minlength=hours)[:hours]
        out[str(arm)] = counts * 1000.0 / float(assigned[arm])
    return out


def _metric_value_columns(defs: Sequence[MetricDef]) -> list[str]:
    return [m.key for m in defs if m.population == "assigned"]


def _per_user(outcomes: pd.DataFrame, defs: Sequence[MetricDef]) -> tuple[pd.DataFrame, int]:
    """One observation per user: each metric averaged over the user's editions (§0.6).

    The per-opener metric is averaged over the editions the user opened. A user whose arm changed
    keeps the first edition's arm (sticky assignment makes that rare).
    """
    ordered = outcomes.sort_values(["user", "edition"], kind="stable")
    columns = _metric_value_columns(defs)
    grouped = ordered.groupby("user", sort=False)
    per_user = grouped[columns].mean()
    per_user["arm"] = grouped["arm"].first()
    per_user["holdout"] = grouped["holdout"].first()
    changed = int((grouped["arm"].nunique() > 1).sum())
    opened = ordered[ordered["opened"]]
    per_user["opened"] = per_user.index.isin(opened["user"].unique())
    per_opener = opened.groupby("user")["completed_after_open"].mean()
    per_user["completed_after_open_opener_rate"] = per_opener.reindex(per_user.index)
    return per_user.reset_index(), changed


def _arm_stats(
    rows: pd.DataFrame, defs: Sequence[MetricDef], pooled: bool, *, holdout: bool
) -> dict[str, ArmStat]:
    """Each applicable metric's summary over this arm's units (deliveries, or users if pooled)."""
    stats: dict[str, ArmStat] = {}
    for metric in defs:
        if holdout and metric.open_anchored:
            continue
        if metric.population == "openers":
            opened = rows[rows["opened"].astype(bool)]
            values = (
                opened["completed_after_open_opener_rate"]
                if pooled
                else opened["completed_after_open"]
            )
        else:
            values = rows[metric.key]
        stats[metric.key] = _summarize(values.to_numpy(dtype=float), metric, pooled)
    return stats


def _summarize(values: np.ndarray, metric: MetricDef, pooled: bool) -> ArmStat:
    if metric.kind == "proportion" and not pooled:
        return proportion_stat(len(values), int(values.sum()))
    return mean_stat(len(values), float(values.sum()), float(np.square(values).sum()))


# --------------------------------------------------------------------------- the ledger


class HasEngine(Protocol):
    """What attribution needs from the ledger: its SQLAlchemy engine."""

    @property
    def engine(self) -> sa.Engine: ...


def load_frames(
    ledger: HasEngine,
    campaign: str,
    editions: Sequence[str],
    config: AttributionConfig | None = None,
) -> Frames:
    """Read one campaign's editions from the ledger. Raises UsageError for an unknown edition.

    Completions are read for the editions' users from the earliest send until every window of
    ``config`` has closed after the last send or event.
    """
    config = config or AttributionConfig()
    horizon = pd.Timedelta(hours=max(config.window_hours, config.hours_after_send)) + pd.Timedelta(
        days=config.days_after_send
    )
    with ledger.engine.connect() as conn:
        ids = _edition_ids(conn, schema, campaign, editions)
        deliveries = _read_deliveries(conn, schema, ids)
        events = _read_events(conn, schema, ids)
        completions = _read_completions(conn, schema, ids, deliveries, events, horizon)
    return Frames(
        campaign=campaign,
        editions=tuple(editions),
        deliveries=deliveries,
        events=events,
        completions=completions,
    )


def _edition_ids(
    conn: sa.Connection, schema: object, campaign: str, editions: Sequence[str]
) -> dict[int, str]:
    table: sa.Table = schema.editions  # type: ignore[attr-defined]
    rows = conn.execute(
        sa.select(table.c.edition_id, table.c.edition).where(table.c.campaign == campaign)
    ).all()
    known = {edition: edition_id for edition_id, edition in rows}
    missing = [e for e in editions if e not in known]
    if missing:
        hint = f" Known: {', '.join(sorted(known))}." if known else " It has none yet."
        raise UsageError(
            f"campaign {campaign!r} has no edition {', '.join(missing)} in the ledger.{hint}"
        )
    return {known[e]: e for e in editions}


def _as_text(column: sa.Column[Any]) -> sa.Label[Any]:
    """Read a UTC timestamp column raw (text on SQLite), parsed vectorized by pandas later."""
    return sa.type_coerce(column, sa.String).label(column.key or "")


def _read_deliveries(conn: sa.Connection, schema: object, ids: Mapping[int, str]) -> pd.DataFrame:
    t: sa.Table = schema.deliveries  # type: ignore[attr-defined]
    query = sa.select(
        t.c.delivery_id,
        t.c.edition_id,
        t.c.user_id,
        t.c.arm,
        t.c.source,
        t.c.fallback,
        t.c.state,
        t.c.last_error,
        _as_text(t.c.send_at),
        _as_text(t.c.sent_at),
        t.c.item_ids,
    ).where(t.c.edition_id.in_(list(ids)))
    frame = pd.read_sql(query, conn)
    frame["edition"] = frame.pop("edition_id").map(ids)
    frame["item_ids"] = [tuple(orjson.loads(v)) if v else () for v in frame["item_ids"]]
    return frame


def _delivery_ids(schema: object, ids: Mapping[int, str]) -> sa.Select[tuple[str]]:
    t: sa.Table = schema.deliveries  # type: ignore[attr-defined]
    return sa.select(t.c.delivery_id).where(t.c.edition_id.in_(list(ids)))


def _read_events(conn: sa.Connection, schema: object, ids: Mapping[int, str]) -> pd.DataFrame:
    t: sa.Table = schema.events  # type: ignore[attr-defined]
    query = sa.select(
        t.c.delivery_id, t.c.event_type, _as_text(t.c.occurred_at), t.c.machine_open
    ).where(t.c.delivery_id.in_(_delivery_ids(schema, ids)), t.c.event_type.in_(USED_EVENT_TYPES))
    return pd.read_sql(query, conn)


def _read_completions(
    conn: sa.Connection,
    schema: object,
    ids: Mapping[int, str],
    deliveries: pd.DataFrame,
    events: pd.DataFrame,
    horizon: pd.Timedelta,
) -> pd.DataFrame:
    """Completions of the editions' users in [first send, last send or event + horizon)."""
    t: sa.Table = schema.completions  # type: ignore[attr-defined]
    d: sa.Table = schema.deliveries  # type: ignore[attr-defined]
    if deliveries.empty:
        return pd.DataFrame({c: [] for c in COMPLETION_COLUMNS})
    send_at = _utc(deliveries["send_at"])
    last = max(send_at.max(), _utc(events["occurred_at"]).max() if len(events) else send_at.max())
    start: datetime = send_at.min().tz_localize("UTC").to_pydatetime()
    end: datetime = (last + horizon).tz_localize("UTC").to_pydatetime()
    users = sa.select(d.c.user_id).where(d.c.edition_id.in_(list(ids)))
    query = sa.select(t.c.user_id, t.c.item_id, _as_text(t.c.completed_at)).where(
        t.c.completed_at >= start, t.c.completed_at < end, t.c.user_id.in_(users)
    )
    return pd.read_sql(query, conn)
