"""Compose one user's email: the Jinja context, then subject, preheader, HTML, text, headers.

Everything that is the same for many users is computed once and cached: the compiled
templates (per template folder), the strings (per locale), and a card's static part (per
locale × item). Per user there is only the context assembly and two `Template.render` calls.

Many users get the very same items in the same order (the editorial arm: a few hundred
distinct lists for a whole edition), and then the email differs only by the delivery id in its
links. `Composer` renders such a list once with a placeholder id and gives each further user a
copy with their id put in (`SharedRenders`): one ``str.replace`` instead of two renders. It
first proves on a probe that the templates use the id only as an opaque string (a filter such
as ``|upper`` on a link would change it), and renders every email in full when they do not.
"""

from __future__ import annotations

import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from types import SimpleNamespace
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import jinja2
from markupsafe import Markup

from calm_mail.campaign import Campaign
from calm_mail.compose.templates import (
    LocaleStrings,
    TemplateSet,
    load_template_set,
    text_environment,
)
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, RenderError
from calm_mail.records import ComposedMessage, ContentSource, Item, PlannedDelivery

#: The top-level names of the render context; the lint checks templates against these.
CONTEXT_KEYS = frozenset(
    {"t", "locale", "subject", "preheader", "cards", "links", "sender", "edition"}
)
#: The names subject and preheader strings may use.
SUBJECT_KEYS = frozenset({"first_title", "count"})

SENDGRID_UNSUBSCRIBE = Markup("<%asm_group_unsubscribe_raw_url%>")
SENDGRID_PREFERENCES = Markup("<%asm_preferences_raw_url%>")
_UNSAFE_SCHEMES = frozenset({"javascript", "data", "vbscript", "file"})


class Card(NamedTuple):
    """One item as a template sees it (`card.*`). All text is plain; Jinja escapes it.

    A NamedTuple rather than a frozen dataclass: six are built per email, and a tuple is
    several times cheaper to build than a frozen dataclass' ``object.__setattr__`` calls.
    """

    item_id: str
    title: str
    type_label: str
    duration: str  # "12 min", localized
    narrated_by: str  # "with Ava Stone", localized
    image_url: str
    alt: str  # "<title>, <type>"
    button: str
    is_collection: bool
    sessions: str  # "7 sessions" for a collection, else ""
    part: str  # "Part 2 of 7" for a collection, else ""
    n: int  # position in the email, from 1
    url: str  # deep link with utm_*, lid=card-<n>, rid=<delivery id>


class Links(NamedTuple):
    """`links.*`: where the email's own links go (the unsubscribe ones may be SendGrid tags)."""

    app: str
    unsubscribe: str
    preferences: str  # "" when the campaign has no preferences page


@dataclass(frozen=True, slots=True)
class _CardBase:
    """The part of a card that depends only on (locale, item): built once, reused."""

    fields: tuple[Any, ...]  # Card's fields up to (not including) n and url
    url_prefix: str  # the deep link up to and including the static utm parameters
    url_fragment: str


def namespace(values: Mapping[str, Any]) -> SimpleNamespace:
    """Strings as attributes: Jinja's `t.heading` is a plain getattr (a dict would first raise
    AttributeError inside Jinja on every lookup, which costs more than the render itself)."""
    return SimpleNamespace(
        **{k: namespace(v) if isinstance(v, Mapping) else v for k, v in values.items()}
    )


def unsubscribe_token(delivery_id: str) -> str:
    """The opaque token in unsubscribe links and the List-Unsubscribe header.

    For now it is the delivery id itself (already an opaque, sha256-derived 22-char id, which
    the unsubscribe service can look up in the ledger). It is NOT signed: anyone who learns a
    delivery id could unsubscribe that recipient. Sign it (HMAC with a server key) before the
    unsubscribe endpoint goes public.
    """
    return quote(delivery_id, safe="")


def format_duration(strings: LocaleStrings, seconds: int) -> str:
    """`12 min` or `1 h 5 min`, in the locale's words; never "0 min"."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return strings.format("duration_minutes", minutes=minutes)
    hours, rest = divmod(minutes, 60)
    return strings.format("duration_hours", hours=hours, minutes=rest)


def _one_line(text: str) -> str:
    """Subjects and preheaders are headers/preview text: no line breaks, no runs of spaces."""
    return " ".join(text.split())


class ContextBuilder:
    """Builds the Jinja render context for one campaign and edition. See `render_context`."""

    def __init__(
        self, campaign: Campaign, edition: Edition | str, collection_sizes: Mapping[str, int]
    ) -> None:
        self.campaign = campaign
        self.edition = str(edition)
        self.collection_sizes = collection_sizes
        sender = campaign.sender
        self._sender = SimpleNamespace(
            postal_address=sender.postal_address, from_name=sender.from_name
        )
        self._static_query = urlencode(
            {
                "utm_source": "email",
                "utm_medium": "email",
                "utm_campaign": campaign.name,
                "utm_content": self.edition,
            }
        )
        self._app_prefix, self._app_fragment = self._link_prefix(sender.app_link_base)
        self._bases: dict[tuple[str, str], _CardBase] = {}
        self._strings: dict[str, SimpleNamespace] = {}
        # Many users share a first item (the editorial arm: all of them), so cache small ones.
        self._subjects: dict[tuple[str, str, int], tuple[str, str]] = {}

    def context(
        self,
        strings: LocaleStrings,
        subject: jinja2.Template,
        preheader: jinja2.Template,
        items: Sequence[Item],
        delivery_id: str,
    ) -> dict[str, Any]:
        """The render context for one email; `subject` and `preheader` are rendered here."""
        rid = quote(delivery_id, safe="")
        cards = [self._card(strings, item, n, rid) for n, item in enumerate(items, start=1)]
        lines = self.lines(strings, subject, preheader, items)
        t = self._strings.get(strings.locale)
        if t is None:
            t = self._strings[strings.locale] = namespace(strings.values)
        return {
            "t": t,
            "locale": strings.locale,
            "subject": lines[0],
            "preheader": lines[1],
            "cards": cards,
            "links": self._links(rid, delivery_id),
            "sender": self._sender,
            "edition": self.edition,
        }

    def lines(
        self,
        strings: LocaleStrings,
        subject: jinja2.Template,
        preheader: jinja2.Template,
        items: Sequence[Item],
    ) -> tuple[str, str]:
        """(subject, preheader) for `items`, rendered once per (locale, first title, count)."""
        first_title = items[0].title if items else ""
        key = (strings.locale, first_title, len(items))
        lines = self._subjects.get(key)
        if lines is None:
            small = {"first_title": first_title, "count": len(items)}
            lines = (_one_line(subject.render(small)), _one_line(preheader.render(small)))
            if len(self._subjects) < 10_000:
                self._subjects[key] = lines
        return lines

    def _links(self, rid: str, delivery_id: str) -> Links:
        sender = self.campaign.sender
        app = f"{self._app_prefix}&lid=app&rid={rid}{self._app_fragment}"
        if sender.list_unsubscribe == "sendgrid":
            preferences = sender.preferences_url or SENDGRID_PREFERENCES
            return Links(app, SENDGRID_UNSUBSCRIBE, preferences)
        token = unsubscribe_token(delivery_id)
        unsubscribe = sender.unsubscribe_url.replace("{token}", token)
        preferences = ""
        if sender.preferences_url:
            joiner = "&" if "?" in sender.preferences_url else "?"
            preferences = f"{sender.preferences_url}{joiner}token={token}"
        return Links(app, unsubscribe, preferences)

    def _card(self, strings: LocaleStrings, item: Item, n: int, rid: str) -> Card:
        key = (strings.locale, item.item_id)
        base = self._bases.get(key)
        if base is None:
            base = self._bases[key] = self._card_base(strings, item)
        url = f"{base.url_prefix}&lid=card-{n}&rid={rid}{base.url_fragment}"
        return Card._make((*base.fields, n, url))

    def _card_base(self, strings: LocaleStrings, item: Item) -> _CardBase:
        types = strings.values.get("types", {})
        type_label = str(types.get(item.content_type) or types.get("other") or item.content_type)
        size = self.collection_sizes.get(item.collection_id, 0) if item.collection_id else 0
        is_collection = size > 1
        sessions = part = ""
        button = strings.get("listen")
        if is_collection:
            sessions = strings.format("sessions", n=size)
            position = item.collection_position or 1
            part = strings.format("part", position=position, total=size)
            button = strings.get("continue_collection" if position > 1 else "start_collection")
        prefix, fragment = self._link_prefix(item.deep_link, item)
        fields = (
            item.item_id,
            item.title,
            type_label,
            format_duration(strings, item.duration_s),
            strings.format("narrated_by", narrator=item.narrator),
            item.image_url,
            strings.format("image_alt", title=item.title, type=type_label),
            button,
            is_collection,
            sessions,
            part,
        )
        return _CardBase(fields=fields, url_prefix=prefix, url_fragment=fragment)

    def _link_prefix(self, link: str, item: Item | None = None) -> tuple[str, str]:
        """Split a deep link into (everything up to the static utm query, the #fragment)."""
        parts = urlsplit(link)
        if parts.scheme.lower() in _UNSAFE_SCHEMES:
            what = f"item {item.item_id!r}" if item else "app_link_base"
            raise RenderError(f"{what}: link scheme {parts.scheme!r} is not allowed: {link!r}")
        if not parts.scheme:
            base = self.campaign.sender.app_link_base.rstrip("/")
            parts = urlsplit(f"{base}/{link.lstrip('/')}")
        query = f"{parts.query}&{self._static_query}" if parts.query else self._static_query
        prefix = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        return prefix, fragment


def collection_sizes(catalog: Iterable[Item]) -> dict[str, int]:
    """How many parts each collection has in the catalog."""
    return dict(Counter(item.collection_id for item in catalog if item.collection_id))


def render_context(
    campaign: Campaign,
    edition: Edition | str,
    strings: LocaleStrings,
    items: Sequence[Item],
    delivery_id: str,
    *,
    sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The Jinja context the templates are rendered with, for one recipient.

    Keys (`CONTEXT_KEYS`):

    - ``t``: the locale's strings as attributes (``t.heading``, ``t.types.music``);
    - ``locale``: "en-US", ...; ``edition``: "2026-W27";
    - ``subject``, ``preheader``: already rendered from the strings, one line each;
    - ``cards``: a list of `Card` in plan order (title, type_label, duration, narrated_by,
      image_url, alt, url, button, is_collection, sessions, part, n, item_id);
    - ``links``: `Links` (app, unsubscribe, preferences). With SendGrid's subscription
      tracking the last two are SendGrid's substitution tags, marked safe so they reach the
      HTML verbatim; ``preferences`` is "" when there is no preferences page;
    - ``sender``: postal_address and from_name.

    `sizes` maps collection id -> number of parts (default: counted in `items`, which is only
    right when `items` is the whole catalog; pass `collection_sizes(catalog)`). Raises
    ConfigError when a string is missing or its {placeholders} do not fit.
    """
    builder = ContextBuilder(campaign, edition, sizes or collection_sizes(items))
    env = text_environment()
    subject = env.from_string(strings.get("subject"))
    preheader = env.from_string(strings.get("preheader"))
    return builder.context(strings, subject, preheader, items, delivery_id)


def sample_delivery(
    edition: str,
    locale: str,
    item_ids: Sequence[str],
    *,
    who: str,
    send_at: datetime = datetime(2026, 1, 3, 8, tzinfo=UTC),
) -> PlannedDelivery:
    """A made-up editorial delivery to render (lint, the sharing probe): user and arm `who`."""
    return PlannedDelivery(
        edition=edition,
        user_id=who,
        email=f"{who}@example.com",
        locale=locale,
        arm=who,
        source=ContentSource.EDITORIAL,
        fallback=False,
        item_ids=tuple(item_ids),
        send_at=send_at,
        timezone="UTC",
    )


class SharedRenders:
    """Rendered (html, text) per (locale, item ids), made with a placeholder delivery id.

    A list is rendered for sharing only when it comes a second time (most personalized lists
    are one of a kind), and at most `max_entries` are kept, oldest out first (an email is
    ~50 kB, so 512 entries stay under ~30 MB).
    """

    def __init__(self, max_entries: int = 512, max_seen: int = 200_000) -> None:
        # 22 url-safe characters like a real delivery id, so lengths in the output match;
        # random per process, so no catalog text can contain it by accident.
        self.placeholder = secrets.token_hex(11)
        self.max_entries = max_entries
        self.max_seen = max_seen
        self.renders: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, str]] = OrderedDict()
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        self.hits = 0

    def get(self, key: tuple[str, tuple[str, ...]]) -> tuple[str, str] | None:
        found = self.renders.get(key)
        if found is not None:
            self.hits += 1
        return found

    def admit(self, key: tuple[str, tuple[str, ...]]) -> bool:
        """True when `key` came before: render it with the placeholder and `put` it."""
        if key in self.seen:
            return True
        if len(self.seen) < self.max_seen:
            self.seen.add(key)
        return False

    def put(self, key: tuple[str, tuple[str, ...]], rendered: tuple[str, str]) -> None:
        self.renders[key] = rendered
        if len(self.renders) > self.max_entries:
            self.renders.popitem(last=False)


class Composer:
    """Renders the campaign's email for each planned delivery of one edition.

    `share_renders` (default on) reuses the rendering of an item list many users share; see
    the module docstring. The render benchmark turns it off to measure rendering itself.
    """

    def __init__(
        self,
        campaign: Campaign,
        catalog: Mapping[str, Item],
        edition: Edition | str,
        *,
        templates: TemplateSet | None = None,
        share_renders: bool = True,
    ) -> None:
        self.campaign = campaign
        self.catalog = catalog
        self.edition = str(edition)
        self.templates = templates or load_template_set(campaign.template_dir)
        self.builder = ContextBuilder(campaign, edition, collection_sizes(catalog.values()))
        sender = campaign.sender
        self._categories = tuple(sender.categories)
        self.shared: SharedRenders | None = None
        if share_renders and self._id_is_opaque():
            self.shared = SharedRenders()

    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage:
        """The finished message for `delivery`.

        Raises ValueError for a holdout delivery (it is never composed), RenderError when an
        item is missing from the catalog or a template fails, ConfigError when the locale has
        no strings file.
        """
        if delivery.is_holdout:
            raise ValueError(f"user {delivery.user_id!r} is in the holdout: nothing to compose")
        items = self._items(delivery)
        subject, preheader, html, text = self._render(delivery, items, delivery_id)
        return ComposedMessage(
            delivery_id=delivery_id,
            to_email=delivery.email,
            from_email=self.campaign.sender.from_email,
            from_name=self.campaign.sender.from_name,
            reply_to=self.campaign.sender.reply_to,
            subject=subject,
            preheader=preheader,
            html=html,
            text=text,
            headers=self._headers(delivery_id),
            categories=self._categories,
            custom_args={
                "delivery_id": delivery_id,
                "campaign": self.campaign.name,
                "edition": delivery.edition,
                "arm": delivery.arm,
            },
            send_at=delivery.send_at,
            asm_group_id=self.campaign.sender.unsubscribe_group,
        )

    def _render(
        self, delivery: PlannedDelivery, items: Sequence[Item], delivery_id: str
    ) -> tuple[str, str, str, str]:
        """(subject, preheader, html, text), from a shared rendering when one fits."""
        shared = self.shared
        if shared is None or quote(delivery_id, safe="") != delivery_id:
            return self._render_for(delivery, items, delivery_id)
        key = (delivery.locale, delivery.item_ids)
        found = shared.get(key)
        if found is None:
            if not shared.admit(key):
                return self._render_for(delivery, items, delivery_id)
            subject, preheader, *rendered = self._render_for(delivery, items, shared.placeholder)
            shared.put(key, (rendered[0], rendered[1]))
            found = (rendered[0], rendered[1])
        else:
            compiled = self.templates.for_locale(delivery.locale)
            subject, preheader = self.builder.lines(
                compiled.strings, compiled.subject, compiled.preheader, items
            )
        placeholder = shared.placeholder
        html, text = found
        return (
            subject,
            preheader,
            html.replace(placeholder, delivery_id),
            text.replace(placeholder, delivery_id),
        )

    def _render_for(
        self, delivery: PlannedDelivery, items: Sequence[Item], delivery_id: str
    ) -> tuple[str, str, str, str]:
        compiled = self.templates.for_locale(delivery.locale)
        try:
            context = self.builder.context(
                compiled.strings, compiled.subject, compiled.preheader, items, delivery_id
            )
            html = compiled.html.render(context)
            text = compiled.text.render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(
                f"{self.campaign.template_dir}: rendering for user {delivery.user_id!r} "
                f"(locale {delivery.locale}) failed: {exc}"
            ) from exc
        return context["subject"], context["preheader"], html, text

    def _id_is_opaque(self) -> bool:
        """Whether the templates carry the delivery id through unchanged, so that a rendering
        made with a placeholder id becomes anyone's by putting their id in its place. Checked
        per locale on a probe email against a full rendering; a locale that cannot render is
        skipped here (compose reports it for the users who have it)."""
        items = list(islice(self.catalog.values(), 3))
        placeholder, real = secrets.token_hex(11), "Ab-_9zYx8wVu7tSr6qPo5n"
        checked = 0
        for locale in self.campaign.audience.locales:
            probe = sample_delivery(self.edition, locale, [i.item_id for i in items], who="probe")
            try:
                direct = self._render_for(probe, items, real)
                shared = self._render_for(probe, items, placeholder)
            except CalmMailError:
                continue
            if placeholder not in shared[2] or direct[2:] != tuple(
                part.replace(placeholder, real) for part in shared[2:]
            ):
                return False
            checked += 1
        return checked > 0

    def _items(self, delivery: PlannedDelivery) -> list[Item]:
        items = []
        for item_id in delivery.item_ids:
            item = self.catalog.get(item_id)
            if item is None:
                raise RenderError(
                    f"item {item_id!r} planned for user {delivery.user_id!r} is not in the catalog"
                )
            items.append(item)
        return items

    def _headers(self, delivery_id: str) -> dict[str, str]:
        """RFC 8058 one-click headers, unless SendGrid's subscription tracking adds them."""
        sender = self.campaign.sender
        if sender.list_unsubscribe != "headers":
            return {}
        token = unsubscribe_token(delivery_id)
        targets = [f"<{sender.unsubscribe_url.replace('{token}', token)}>"]
        if sender.unsubscribe_mailto:
            targets.append(f"<mailto:{sender.unsubscribe_mailto}?subject=unsubscribe-{token}>")
        return {
            "List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
