"""The editors' preview page: a small starlette app on 127.0.0.1, served by uvicorn.

Routes::

    GET /                     the page (inline CSS and JS, no external assets)
    GET /api/state            campaign, editions with data, arms, personas, sample user ids
    GET /api/version          {"version": n}; n grows when a watched file changes
    GET /api/preview          ?edition=W&(user=ID|persona=NAME)[&placeholders=1]: every arm
    GET /email                ?edition=W&(user=ID|persona=NAME)&arm=A: one email's raw HTML

Reload: every /api/version call (the page polls it each second) stats the campaign file, the
template folder (layout, partials, text, strings), the rule file and the editorial picks of
the editions in use. When any changed, the version grows and every cache (campaign, compiled
templates, rules, prepared editions, lint) is dropped, so the next preview re-reads them all.
"""

from __future__ import annotations

import re
import socket
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.compose.lint import lint_templates
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, UsageError
from calm_mail.inputs import iter_audience
from calm_mail.preview.personas import PERSONAS
from calm_mail.preview.preview import (
    ArmPreview,
    EditionPreview,
    PreviewStore,
    UnknownUser,
    UserPreview,
    describe_exclusion,
)
from calm_mail.records import Item, SkipCounter, TraceStep

HOST = "127.0.0.1"
PAGE = Path(__file__).with_name("page.html")
SAMPLE_USERS = 200
_ISO_WEEK = re.compile(r"^\d{4}-W\d{2}$")
_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")(https?://[^"]+)(")', re.IGNORECASE)


class PreviewApp:
    """The page's state: caches keyed by nothing but the watched files' version."""

    def __init__(
        self,
        campaign: str,
        *,
        root: str | Path | None,
        store: PreviewStore | None = None,
        edition: Edition | None = None,
        loaded: Campaign | None = None,
    ) -> None:
        self.campaign_name = campaign
        self.root = root
        self.store = store
        self.first_edition = edition
        self._lock = threading.RLock()
        self._campaign: Campaign | None = loaded
        self._editions: dict[str, EditionPreview] = {}
        self._lint: list[str] | None = None
        self._fingerprint = self._stat_files()
        self.version = 1
        self.app = Starlette(
            routes=[
                Route("/", self.page),
                Route("/api/state", self.state),
                Route("/api/version", self.version_endpoint),
                Route("/api/preview", self.preview),
                Route("/email", self.email),
            ]
        )

    # ------------------------------------------------------------------ caches

    @property
    def campaign(self) -> Campaign:
        if self._campaign is None:
            self._campaign = load_campaign(self.campaign_name, self.root)
        return self._campaign

    def prepared(self, edition: str) -> EditionPreview:
        """The edition prepared for previews (cached until a watched file changes)."""
        found = self._editions.get(edition)
        if found is None:
            found = EditionPreview(self.campaign, Edition.parse(edition), store=self.store)
            self._editions[edition] = found
            self._fingerprint = self._stat_files()  # now also watch this edition's picks
        return found

    def lint(self) -> list[str]:
        """Template lint warnings (`calm-mail validate`'s template part), cached."""
        if self._lint is None:
            catalog = next(iter(self._editions.values())).catalog if self._editions else None
            try:
                self._lint = lint_templates(self.campaign, catalog)
            except CalmMailError as exc:
                self._lint = [str(exc)]
        return self._lint

    def check_files(self) -> int:
        """Stat the watched files; on any change drop every cache and bump the version once."""
        with self._lock:
            if self._stat_files() != self._fingerprint:
                self._campaign = None
                self._editions.clear()
                self._lint = None
                self.version += 1
                # Which files are watched follows the caches (the campaign's paths, the picks of
                # the editions prepared), so re-take the fingerprint now they are dropped: else
                # the next call sees the shorter list as one more change.
                self._fingerprint = self._stat_files()
            return self.version

    def _watched(self) -> Iterator[Path]:
        try:
            campaign = self.campaign
        except CalmMailError:  # a broken campaign file: keep watching it until it is fixed
            root = Path(self.root or ".")
            yield from (root / "campaigns").glob("*.toml")
            return
        yield campaign.path
        yield campaign.rules_path
        if campaign.template_dir.is_dir():
            yield from sorted(p for p in campaign.template_dir.rglob("*") if p.is_file())
        for edition in list(self._editions):
            yield Path(campaign.input_path("editorial", edition))

    def _stat_files(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in self._watched():
            try:
                st = path.stat()
            except OSError:
                out.append((str(path), -1, -1))
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    # ------------------------------------------------------------------ routes

    def page(self, request: Request) -> Response:
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        html = env.from_string(PAGE.read_text(encoding="utf-8")).render(
            title=self._title(), boot={"campaign": self.campaign_name}
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def state(self, request: Request) -> Response:
        self.check_files()
        with self._lock:
            try:
                campaign = self.campaign
            except CalmMailError as exc:
                return _error(exc)
            editions = available_editions(campaign)
            first = self.first_edition.key if self.first_edition else None
            if first is None:
                first = editions[0] if editions else Edition.upcoming().key
            if first not in editions:
                editions.insert(0, first)
            return _json(
                {
                    "campaign": campaign.name,
                    "title": campaign.campaign.title,
                    "editions": editions,
                    "edition": first,
                    "arms": [
                        {"name": a.name, "source": str(a.source), "weight": a.weight}
                        for a in campaign.experiment.arms
                    ],
                    "personas": [
                        {"name": p.name, "label": p.label, "description": p.description}
                        for p in PERSONAS.values()
                    ],
                    "users": sample_users(campaign, first),
                    "version": self.version,
                }
            )

    def version_endpoint(self, request: Request) -> Response:
        return _json({"version": self.check_files()})

    def preview(self, request: Request) -> Response:
        self.check_files()
        query = request.query_params
        placeholders = query.get("placeholders", "0") in ("1", "true", "on")
        with self._lock:
            try:
                result = self._preview(
                    query.get("edition"), query.get("user"), query.get("persona")
                )
                payload = preview_payload(
                    result, placeholders=placeholders, catalog=self.prepared(result.edition).catalog
                )
                payload["lint"] = self.lint()
            except CalmMailError as exc:
                return _error(exc)
            payload["version"] = self.version
        return _json(payload)

    def email(self, request: Request) -> Response:
        query = request.query_params
        with self._lock:
            try:
                result = self._preview(
                    query.get("edition"), query.get("user"), query.get("persona")
                )
            except CalmMailError as exc:
                return _error(exc)
        shown = result.for_arm(query.get("arm"))
        if shown.message is None:
            return HTMLResponse(f"<p>{describe_exclusion(result, shown)}</p>", status_code=404)
        return HTMLResponse(shown.message.html, headers={"Cache-Control": "no-store"})

    def _preview(self, edition: str | None, user: str | None, persona: str | None) -> UserPreview:
        key = (
            Edition.parse(edition).key
            if edition
            else (self.first_edition or Edition.upcoming()).key
        )
        prepared = self.prepared(key)
        if user:
            return prepared.user(user.strip(), arms=prepared.arms)
        if persona:
            return prepared.persona(persona, arms=prepared.arms)
        raise UsageError("pick a user id or a persona")

    def _title(self) -> str:
        try:
            return f"{self.campaign.campaign.title} · preview"
        except CalmMailError:
            return "calm-mail preview"


# ----------------------------------------------------------------------------- payloads


def preview_payload(
    result: UserPreview, *, placeholders: bool = False, catalog: Mapping[str, Item] | None = None
) -> dict[str, Any]:
    """The JSON the page renders: who, and per arm the message, the items and the trace
    (dropped items get their titles from `catalog`)."""
    titles = {i: item.title for i, item in (catalog or {}).items()}
    user = result.user
    return {
        "edition": result.edition,
        "delivery_id": result.delivery_id,
        "who": {
            "user_id": user.user_id,
            "label": result.persona.label if result.persona else f"User {user.user_id}",
            "persona": result.persona.name if result.persona else None,
            "locale": user.locale,
            "level": user.level,
            "tenure_days": user.tenure_days,
            "timezone": user.timezone,
        },
        "arm": result.arm,
        "notes": list(result.notes),
        "arms": [_arm_payload(result, arm, placeholders, titles) for arm in result.arms],
    }


def _arm_payload(
    result: UserPreview, arm: ArmPreview, placeholders: bool, titles: Mapping[str, str]
) -> dict[str, Any]:
    message = arm.message
    trace = arm.trace
    out: dict[str, Any] = {
        "arm": arm.arm,
        "source": arm.source,
        "own": arm.own,
        "fallback": arm.fallback,
        "exclusion": arm.exclusion,
        "exclusion_text": describe_exclusion(result, arm) if arm.exclusion else None,
        "trace": {
            "eligibility": trace.eligibility,
            "arm_why": trace.arm_why,
            "outcome": trace.outcome,
            "candidates": trace.candidates,
            "fallback_why": trace.fallback_why,
            "steps": [_step(s, titles) for s in trace.steps],
            "fallback_steps": [_step(s, titles) for s in trace.fallback_steps],
        },
        "items": [
            {
                "position": w.position,
                "item_id": w.item.item_id,
                "title": w.item.title,
                "type": w.item.content_type,
                "language": w.item.language,
                "minutes": round(w.item.duration_s / 60),
                "rank": w.rank,
                "source": w.source,
                "note": w.note,
            }
            for w in arm.items
        ],
    }
    if arm.delivery is not None and not arm.delivery.is_holdout:
        out["send_at"] = arm.delivery.send_at.isoformat()
        out["timezone"] = arm.delivery.timezone
    if message is not None:
        out.update(
            subject=message.subject,
            preheader=message.preheader,
            text=message.text,
            html=with_placeholders(message.html) if placeholders else message.html,
            html_bytes=len(message.html.encode("utf-8")),
            headers=dict(message.headers),
            from_=f"{message.from_name} <{message.from_email}>",
        )
    return out


def _step(step: TraceStep, titles: Mapping[str, str]) -> dict[str, Any]:
    return {
        "step": step.step,
        "note": step.note,
        "dropped": [
            {"item_id": i, "title": titles.get(i, ""), "why": why} for i, why in step.dropped
        ],
    }


def with_placeholders(html: str) -> str:
    """Swap remote images for inline SVG placeholders (this machine may be offline). Only
    the page does this, on request; the email itself is never changed."""
    return _IMG_SRC.sub(lambda m: m[1] + placeholder_svg(m[2]) + m[3], html)


def placeholder_svg(url: str) -> str:
    hue = zlib.crc32(url.encode()) % 360
    svg = (
        "<svg xmlns='http://www.w3.org/2000/svg' width='360' height='360' viewBox='0 0 360 360'>"
        "<defs><linearGradient id='g' x1='0' y1='0' x2='1' y2='1'>"
        f"<stop offset='0' stop-color='hsl({hue},45%,62%)'/>"
        f"<stop offset='1' stop-color='hsl({(hue + 40) % 360},50%,32%)'/></linearGradient>"
        "</defs><rect width='360' height='360' fill='url(#g)'/>"
        "<circle cx='230' cy='130' r='48' fill='rgba(255,255,255,.85)'/>"
        f"<circle cx='252' cy='114' r='44' fill='hsl({hue},45%,58%)'/>"
        "<path d='M0 270 Q90 220 180 262 T360 250 V360 H0Z' fill='rgba(255,255,255,.18)'/></svg>"
    )
    return "data:image/svg+xml;utf8," + quote(svg, safe=" =:/',.()")


# ----------------------------------------------------------------------------- lookups


def available_editions(campaign: Campaign) -> list[str]:
    """Editions with an editorial list on disk (local inputs only), newest first."""
    pattern = campaign.inputs.editorial.replace("{root}", str(campaign.root))
    if "{edition}" not in pattern or pattern.startswith("s3://"):
        return []
    before, _, suffix = pattern.partition("{edition}")
    head, _, prefix = before.rpartition("/")
    folder = Path(head or ".")
    if not folder.is_dir() or "/" in suffix:
        return []
    found = []
    for path in folder.iterdir():
        name = path.name
        if name.startswith(prefix) and name.endswith(suffix):
            key = name[len(prefix) : len(name) - len(suffix) if suffix else None]
            if _ISO_WEEK.match(key):
                found.append(key)
    return sorted(found, reverse=True)


def sample_users(campaign: Campaign, edition: str) -> list[str]:
    """The first audience ids, for the page's user picker (empty when unreadable)."""
    out: list[str] = []
    try:
        for user in iter_audience(campaign.input_path("audience", edition), skips=SkipCounter()):
            out.append(user.user_id)
            if len(out) >= SAMPLE_USERS:
                break
    except CalmMailError:
        return []
    return out


def _json(payload: dict[str, Any]) -> Response:
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


def _error(exc: CalmMailError) -> Response:
    status = 404 if isinstance(exc, UnknownUser) else 422
    return JSONResponse(
        {"error": str(exc), "at": datetime.now().isoformat(timespec="seconds")},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


# ----------------------------------------------------------------------------- serving


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 only (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(128)
    return sock


def make_server(app: PreviewApp) -> uvicorn.Server:
    config = uvicorn.Config(
        app.app, host=HOST, log_level="warning", lifespan="off", access_log=False
    )
    return uvicorn.Server(config)


def serve_forever(app: PreviewApp, *, port: int, announce: Callable[[str], None]) -> None:
    """Serve until interrupted; `announce` gets the URL once the socket listens."""
    sock = bind(port)
    announce(f"http://{HOST}:{sock.getsockname()[1]}/")
    make_server(app).run(sockets=[sock])
