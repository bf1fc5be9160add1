"""The ledger: the one place editions, deliveries, assignments, events, completions,
suppressions and locks live, on SQLite (default) or PostgreSQL. See `ledger.Ledger`."""

from calm_mail.store.deliveries import DeliveryRow, delivery_id_for, shard_of
from calm_mail.store.editions import EditionInfo, EditionLogEntry
from calm_mail.store.ledger import Ledger
from calm_mail.store.suppressions import Suppression

__all__ = [
    "DeliveryRow",
    "EditionInfo",
    "EditionLogEntry",
    "Ledger",
    "Suppression",
    "delivery_id_for",
    "shard_of",
]
