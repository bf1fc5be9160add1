"""The ledger: the one place editions, deliveries, assignments, events, completions and
suppressions live, on SQLite (default) or PostgreSQL. See `ledger.Ledger`."""

from calm_mail.store.ledger import (
    DeliveryRow,
    EditionInfo,
    EditionLogEntry,
    Ledger,
    Suppression,
    delivery_id_for,
    shard_of,
)

__all__ = [
    "DeliveryRow",
    "EditionInfo",
    "EditionLogEntry",
    "Ledger",
    "Suppression",
    "delivery_id_for",
    "shard_of",
]
