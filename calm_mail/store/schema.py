"""The ledger's tables, in SQLAlchemy Core, one schema for SQLite and PostgreSQL.

Every timestamp is stored as UTC and read back timezone-aware: PostgreSQL keeps it in a
``TIMESTAMP WITH TIME ZONE``; SQLite has no time type, so `UTCDateTime` stores a fixed-width
ISO-8601 text (``2026-11-28 08:00:00.000000+00:00``) that sorts and compares like the instant
and that SQLite's own date functions understand. JSON values are stored as text on both, so the
same raw SQL works on either database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime stored as UTC. Naive datetimes are refused, never guessed."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware datetimes only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.isoformat(sep=" ", timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(sa.types.TypeDecorator[Any]):
    """A JSON value kept as text (sorted keys), identical on both databases."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


def _now_column(name: str, **kwargs: Any) -> sa.Column[datetime]:
    return sa.Column(name, UTCDateTime(), nullable=False, **kwargs)


schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    _now_column("applied_at"),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("edition_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(200), nullable=False),
    sa.Column("edition", sa.String(32), nullable=False),
    sa.Column("experiment", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("batch_id", sa.String(200)),
    sa.Column("scheduled_status", sa.String(16)),
    sa.Column("preflight", JSONText()),
    sa.Column("summary", JSONText()),
    _now_column("created_at"),
    _now_column("updated_at"),
    sa.UniqueConstraint("campaign", "edition", name="uq_editions_campaign_edition"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(32), primary_key=True),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.edition_id", name="fk_deliveries_edition"),
        nullable=False,
    ),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("locale", sa.String(32), nullable=False),
    sa.Column("arm", sa.String(100), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("item_ids", sa.Text, nullable=False),  # a JSON list, encoded by the ledger
    sa.Column("send_at", UTCDateTime(), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),  # shard_of(user_id): 0..1023
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("message_id", sa.String(200)),
    sa.Column("last_error", sa.Text),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_at", UTCDateTime()),
    sa.Column("sent_at", UTCDateTime()),
    _now_column("updated_at"),
    sa.UniqueConstraint("edition_id", "user_id", name="uq_deliveries_edition_user"),
    sa.Index("ix_deliveries_edition_state_shard", "edition_id", "state", "shard"),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("experiment", sa.String(200), primary_key=True),
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("arm", sa.String(100), nullable=False),
    sa.Column("first_edition", sa.String(32), nullable=False),
    _now_column("assigned_at"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),  # lowercased
    sa.Column("reason", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(200), nullable=False),
    _now_column("created_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("delivery_id", sa.String(32), index=True),
    sa.Column("campaign", sa.String(200)),
    sa.Column("edition", sa.String(32)),
    sa.Column("arm", sa.String(100)),
    sa.Column("message_id", sa.String(200)),
    sa.Column("machine_open", sa.Boolean, nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("raw", sa.Text, nullable=False),
    _now_column("received_at"),
    sa.Index("ix_events_campaign_edition", "campaign", "edition"),
)

# Webhook events the ledger could not hold as events (a value longer than its column, a NUL
# character, a number out of range, or a row the database refused): kept raw with the reason,
# once per raw text (``raw_sha256``), so a retried batch adds nothing.
rejected_events = sa.Table(
    "rejected_events",
    metadata,
    sa.Column("raw_sha256", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),  # JSON text, no NUL: either database holds it
    _now_column("received_at"),
)

completions = sa.Table(
    "completions",
    metadata,
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("completed_at", UTCDateTime(), primary_key=True),
    sa.Column("source", sa.String(200), nullable=False),
    _now_column("imported_at"),
    sa.Index("ix_completions_completed_at", "completed_at"),
    sa.Index("ix_completions_user_id", "user_id"),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

edition_log = sa.Table(
    "edition_log",
    metadata,
    sa.Column("entry_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.edition_id", name="fk_edition_log_edition"),
        nullable=False,
        index=True,
    ),
    _now_column("at"),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("detail", JSONText()),
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("experiment", sa.String(200), primary_key=True),
    sa.Column("seed", sa.String(200), nullable=False),
    sa.Column("weights", JSONText(), nullable=False),
    _now_column("created_at"),
)
