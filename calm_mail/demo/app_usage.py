"""Simulated in-app usage: completions after the email, with a known true lift.

The sandbox plays the mailbox (opens, clicks, machine opens); this module plays the app. For every
recipient with a human open it draws whether they complete content within 24 hours, with the
chance `completion_rate × (1 + lift[arm])` taken from the generator's hidden tastes, and what they
complete (mostly an emailed item). Every user, holdout included, also completes content on their
own at `organic_per_day`, so the metric has the noise a real one has.

Because the model is explicit, the **true lift** of the primary metric (completed any content
within 24 h of the first human open, per recipient) is known in expectation:

    P_arm(u) = 1 - (1 - min(max_p, e_u (1 + lift_arm))) · exp(-organic_per_day)
    true_lift_arm = Σ_u q_u P_arm(u) / Σ_u q_u P_control(u) - 1

over all recipients u, with q_u ∝ the user's chance of a human open (the open propensity the
sandbox is driven with, the same in every arm). The loop tests check the report's interval
against it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np


class Recipient(Protocol):
    @property
    def user_id(self) -> str: ...
    @property
    def delivery_id(self) -> str: ...
    @property
    def arm(self) -> str: ...
    @property
    def item_ids(self) -> tuple[str, ...]: ...
    @property
    def send_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Taste:
    completion_rate: float  # e_u: chance to complete an emailed session once opened
    open_weight: float  # q_u, up to a constant: the chance of a human open


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageModel:
    lift: Mapping[str, float]  # arm -> relative lift of the email-driven completion chance
    organic_per_day: float = 0.08
    emailed_item_share: float = 0.7
    mean_delay_h: float = 2.0
    max_p: float = 0.95
    days: int = 8
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Simulated:
    path: Path
    completions: int
    true_lift: Mapping[str, float]  # arm -> expected relative lift vs control (primary metric)


def _rng(seed: int, user_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def true_lift(
    recipients: Sequence[tuple[str, Taste]], model: UsageModel, control: str, arms: Iterable[str]
) -> dict[str, float]:
    """The expected relative lift of the primary metric per arm (see the module docstring)."""
    if not recipients:
        return {}
    e = np.array([t.completion_rate for _, t in recipients])
    q = np.array([t.open_weight for _, t in recipients])
    stay = np.exp(-model.organic_per_day)

    def expected(arm: str) -> float:
        p = np.minimum(model.max_p, e * (1 + model.lift.get(arm, 0.0)))
        return float(np.sum(q * (1 - (1 - p) * stay)) / np.sum(q))

    base = expected(control)
    return {arm: expected(arm) / base - 1 for arm in arms}


def simulate_completions(
    recipients: Iterable[Recipient],
    first_human_open: Mapping[str, datetime],
    tastes: Mapping[str, Taste],
    catalog_ids: Sequence[str],
    model: UsageModel,
    *,
    control: str,
    holdout_arms: Iterable[str] = (),
    out: Path,
) -> Simulated:
    """Write `out` (CSV: user_id, content_id, completed_at) and return the true lift."""
    holdouts = set(holdout_arms)
    mailed: list[tuple[str, Taste]] = []
    arms: set[str] = set()
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "content_id", "completed_at"])
        for r in recipients:
            taste = tastes.get(r.user_id)
            if taste is None:
                continue
            rng = _rng(model.seed, r.user_id)
            rows = _organic(rng, r, catalog_ids, model)
            if r.arm not in holdouts:
                mailed.append((r.user_id, taste))
                arms.add(r.arm)
                opened = first_human_open.get(r.delivery_id)
                if opened is not None:
                    rows += _after_open(rng, r, opened, taste, catalog_ids, model)
            for item, at in rows:
                writer.writerow([r.user_id, item, at.isoformat().replace("+00:00", "Z")])
            written += len(rows)
    return Simulated(
        path=out, completions=written, true_lift=true_lift(mailed, model, control, sorted(arms))
    )


def _organic(
    rng: np.random.Generator, r: Recipient, catalog_ids: Sequence[str], model: UsageModel
) -> list[tuple[str, datetime]]:
    n = rng.poisson(model.organic_per_day * model.days)
    offsets = np.sort(rng.uniform(0, model.days * 86400, n))
    picks = rng.integers(len(catalog_ids), size=n)
    return [
        (str(catalog_ids[int(i)]), r.send_at + timedelta(seconds=float(s)))
        for i, s in zip(picks, offsets, strict=True)
    ]


def _after_open(
    rng: np.random.Generator,
    r: Recipient,
    opened: datetime,
    taste: Taste,
    catalog_ids: Sequence[str],
    model: UsageModel,
) -> list[tuple[str, datetime]]:
    p = min(model.max_p, taste.completion_rate * (1 + model.lift.get(r.arm, 0.0)))
    if rng.random() >= p:
        return []
    delay_h = min(23.5, rng.exponential(model.mean_delay_h))
    if r.item_ids and rng.random() < model.emailed_item_share:
        item = r.item_ids[int(rng.integers(len(r.item_ids)))]
    else:
        item = str(catalog_ids[int(rng.integers(len(catalog_ids)))])
    return [(item, opened + timedelta(hours=float(delay_h)))]
