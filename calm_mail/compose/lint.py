"""Template lint for `calm-mail validate`: every problem at once, each as `file:line: what`.

Checks the sources (MJML tags MRML would mishandle, images without alt, Jinja names and
attributes the render context does not have, string keys per locale) and then the rendered
output of the largest case per locale (alt on every <img>, unsubscribe link, postal address,
size after SendGrid's click tracking has rewritten every link).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import (
    CONTEXT_KEYS,
    SUBJECT_KEYS,
    Composer,
    render_context,
    sample_delivery,
)
from calm_mail.compose.templates import (
    BASE_LOCALE,
    LAYOUT,
    STRINGS,
    TEXT,
    LocaleStrings,
    load_strings,
    load_template_set,
    text_environment,
)
from calm_mail.errors import ConfigError, RenderError
from calm_mail.records import Item

MAX_HTML_BYTES = 90_000
#: A SendGrid-style click-tracking URL of the length SendGrid really produces (~470 chars).
CLICK_URL = "https://u1234567.ct.sendgrid.net/ls/click?upn=" + "u001.Qz7" * 53
LINT_EDITION = "2026-W01"
LINT_DELIVERY_ID = "LintLintLintLintLint00"

_MJML_TAGS = frozenset(
    {
        "mjml",
        "mj-head",
        "mj-attributes",
        "mj-all",
        "mj-class",
        "mj-breakpoint",
        "mj-font",
        "mj-preview",
        "mj-title",
        "mj-style",
        "mj-raw",
        "mj-include",
        "mj-body",
        "mj-section",
        "mj-column",
        "mj-group",
        "mj-wrapper",
        "mj-hero",
        "mj-text",
        "mj-button",
        "mj-image",
        "mj-divider",
        "mj-spacer",
        "mj-table",
        "mj-social",
        "mj-social-element",
        "mj-navbar",
        "mj-navbar-link",
        "mj-accordion",
        "mj-accordion-element",
        "mj-accordion-title",
        "mj-accordion-text",
        "mj-carousel",
        "mj-carousel-image",
    }
)
_TAG_NAME = re.compile(r"<(mj-[a-z-]+)")
_MJ_IMAGE = re.compile(r"<mj-image\b[^>]*>", re.DOTALL)
_IMG = re.compile(r"<img\b[^>]*>", re.DOTALL | re.IGNORECASE)
_ALT = re.compile(r'\balt="([^"]*)"')
_COMPUTED = re.compile(r'\b(width|height)="[^"]*\{[{%]')
_LT_IN_OUTPUT = re.compile(r"\{\{[^}]*<[^}]*\}\}")
_HREF = re.compile(r'href="[^"]*"')


def lint_templates(campaign: Campaign, catalog: Mapping[str, Item] | None = None) -> list[str]:
    """Every problem with the campaign's templates, as `file:line: what`; [] when all is well.

    `catalog`, when given, supplies the longest real titles for the size check; otherwise
    made-up 120-character titles are used.
    """
    directory = campaign.template_dir
    if not (directory / LAYOUT).is_file():
        return [f"{directory / LAYOUT}:1: the campaign's template has no {LAYOUT}"]
    problems = lint_sources(directory)
    problems += lint_strings(directory, campaign.audience.locales)
    problems += lint_rendered(campaign, catalog)
    return problems


# --------------------------------------------------------------------------- sources


def _source_files(directory: Path) -> list[Path]:
    files = sorted(directory.rglob("*.mjml"))
    text = directory / TEXT
    return [*files, text] if text.is_file() else files


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def lint_sources(directory: Path) -> list[str]:
    """MJML and Jinja checks on each source file, with that file's own line numbers."""
    files = _source_files(directory)
    parsed: dict[Path, nodes.Template] = {}
    problems: list[str] = []
    env = text_environment()
    for path in files:
        rel = path.relative_to(directory).as_posix()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".mjml":
            problems += _mjml_problems(rel, text)
        try:
            parsed[path] = env.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: Jinja does not parse: {exc.message}")
    loop_names = {
        name
        for ast in parsed.values()
        for loop in ast.find_all(nodes.For)
        for name in _target_names(loop.target)
    }
    allowed = CONTEXT_KEYS | loop_names | {"loop"}
    sample = _sample_context(directory)
    for path, ast in parsed.items():
        rel = path.relative_to(directory).as_posix()
        problems += _name_problems(rel, ast, allowed)
        if sample is not None:
            problems += _attribute_problems(rel, ast, sample)
    return problems


def _target_names(target: nodes.Node) -> Iterator[str]:
    for name in target.find_all(nodes.Name):
        yield name.name
    if isinstance(target, nodes.Name):
        yield target.name


def _mjml_problems(rel: str, text: str) -> list[str]:
    problems = []
    for match in _TAG_NAME.finditer(text):
        if match[1] not in _MJML_TAGS:
            problems.append(
                f"{rel}:{_line(text, match.start())}: <{match[1]}> is not an MJML component "
                "(mjml-python would pass it through as raw HTML)"
            )
    for pattern, what in ((_MJ_IMAGE, "mj-image"), (_IMG, "img")):
        for match in pattern.finditer(text):
            alt = _ALT.search(match[0])
            if alt is None or not alt[1].strip():
                problems.append(f"{rel}:{_line(text, match.start())}: <{what}> has no alt text")
    for match in _COMPUTED.finditer(text):
        problems.append(
            f"{rel}:{_line(text, match.start())}: Jinja in {match[1]}= is dropped by mjml-python; "
            "use a fixed value"
        )
    for match in _LT_IN_OUTPUT.finditer(text):
        problems.append(
            f"{rel}:{_line(text, match.start())}: '<' inside {{{{ }}}} breaks mjml-python; "
            "compute it in the context or flip the comparison"
        )
    return problems


def _name_problems(rel: str, ast: nodes.Template, allowed: frozenset[str] | set[str]) -> list[str]:
    unknown = meta.find_undeclared_variables(ast) - allowed
    problems = []
    for name in sorted(unknown):
        line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), 1)
        problems.append(
            f"{rel}:{line}: {{{{ {name} }}}} is not in the render context "
            f"(known: {', '.join(sorted(CONTEXT_KEYS))})"
        )
    return problems


def _attribute_problems(rel: str, ast: nodes.Template, sample: Mapping[str, Any]) -> list[str]:
    """`t.typo`, `card.titel`: attribute chains that the sample context cannot resolve."""
    problems = []
    for node in ast.find_all(nodes.Getattr):
        chain: list[str] = []
        inner: nodes.Node = node
        while isinstance(inner, nodes.Getattr):
            chain.insert(0, inner.attr)
            inner = inner.node
        if not isinstance(inner, nodes.Name) or inner.name not in sample:
            continue
        value: Any = sample[inner.name]
        for depth, attr in enumerate(chain):
            if isinstance(value, Mapping) and attr in value:
                value = value[attr]
            elif not isinstance(value, Mapping) and hasattr(value, attr):
                value = getattr(value, attr)
            else:
                dotted = ".".join([inner.name, *chain[: depth + 1]])
                problems.append(f"{rel}:{node.lineno}: {dotted} does not exist")
                break
    return sorted(set(problems))


def _sample_context(directory: Path) -> dict[str, Any] | None:
    """A context to resolve attribute chains against; `card` is one of its cards."""
    try:
        strings = load_strings(directory, BASE_LOCALE)
    except ConfigError:
        return None
    items = _synthetic_items(2)
    campaign = _bare_campaign()
    try:
        context = render_context(campaign, LINT_EDITION, strings, items, LINT_DELIVERY_ID)
    except (jinja2.TemplateError, KeyError, ValueError, RenderError):
        return None
    return {**context, "card": context["cards"][0]}


def _bare_campaign() -> Campaign:
    return Campaign.model_validate(
        {
            "campaign": {"name": "lint", "title": "Lint", "template": "x", "rules": "x"},
            "inputs": {
                k: "x" for k in ("catalog", "audience", "recommendations", "editorial", "history")
            },
            "audience": {"locales": [BASE_LOCALE]},
            "experiment": {
                "name": "x",
                "seed": "x",
                "arms": [{"name": "a", "weight": 1, "source": "editorial"}],
            },
            "sender": {
                "from_email": "a@b.example",
                "from_name": "x",
                "postal_address": "1 Example Street, Town",
                "unsubscribe_url": "https://u.example/{token}",
                "preferences_url": "https://u.example/p",
            },
        }
    )


# --------------------------------------------------------------------------- strings


def _key_line(lines: list[str], dotted: str) -> int:
    *tables, key = dotted.split(".")
    start = 0
    if tables:
        header = re.compile(rf"^\s*\[\s*{re.escape('.'.join(tables))}\s*\]")
        start = next((i for i, line in enumerate(lines) if header.match(line)), 0)
    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
    for i in range(start, len(lines)):
        if pattern.match(lines[i]):
            return i + 1
    return start + 1


def _fields(value: str) -> set[str] | None:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError:
        return None


def lint_strings(directory: Path, locales: tuple[str, ...] | list[str]) -> list[str]:
    """Every locale has exactly the reference locale's keys and {placeholders}; the subject
    and preheader templates use only `SUBJECT_KEYS`."""
    try:
        base = load_strings(directory, BASE_LOCALE)
    except ConfigError as exc:
        return [f"{p}:1: {p}" if ":" not in p else p for p in exc.problems]
    base_flat = base.flat()
    problems: list[str] = []
    for locale in dict.fromkeys([BASE_LOCALE, *locales]):
        rel = f"{STRINGS}/{locale}.toml"
        try:
            strings = base if locale == BASE_LOCALE else load_strings(directory, locale)
        except ConfigError as exc:
            problems.append(f"{rel}:1: {exc}")
            continue
        problems += _locale_problems(rel, strings, base_flat)
    return problems


def _locale_problems(rel: str, strings: LocaleStrings, base: dict[str, str]) -> list[str]:
    lines = strings.path.read_text(encoding="utf-8").splitlines()
    flat = strings.flat()
    problems = [
        f"{rel}:{_key_line(lines, key) if '.' in key else 1}: missing key {key!r} "
        f"({BASE_LOCALE} has it)"
        for key in base
        if key not in flat
    ]
    problems += [
        f"{rel}:{_key_line(lines, key)}: key {key!r} is not in {BASE_LOCALE} (a typo?)"
        for key in flat
        if key not in base
    ]
    env = text_environment()
    for key, value in flat.items():
        if key in ("subject", "preheader"):
            problems += _subject_problems(rel, _key_line(lines, key), key, value, env)
        elif key in base and _fields(value) != _fields(base[key]):
            mine, theirs = sorted(_fields(value) or []), sorted(_fields(base[key]) or [])
            problems.append(
                f"{rel}:{_key_line(lines, key)}: {key!r} has placeholders {mine}, "
                f"{BASE_LOCALE} has {theirs}"
            )
    return problems


def _subject_problems(
    rel: str, line: int, key: str, value: str, env: jinja2.Environment
) -> list[str]:
    try:
        unknown = meta.find_undeclared_variables(env.parse(value)) - SUBJECT_KEYS
    except jinja2.TemplateSyntaxError as exc:
        return [f"{rel}:{line}: {key} is not a valid Jinja template: {exc.message}"]
    return [
        f"{rel}:{line}: {key} uses {{{{ {name} }}}}; only {', '.join(sorted(SUBJECT_KEYS))} exist"
        for name in sorted(unknown)
    ]


# --------------------------------------------------------------------------- rendered


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.missing_alt: list[str] = []
        self.count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.count += 1
            values = dict(attrs)
            if not (values.get("alt") or "").strip():
                self.missing_alt.append(values.get("src") or "?")


def images_without_alt(html: str) -> list[str]:
    """The src of every rendered <img> whose alt is missing or blank."""
    parser = _Images()
    parser.feed(html)
    return parser.missing_alt


def click_tracked(html: str) -> str:
    """`html` with every href replaced by a ~470-character SendGrid click-tracking URL."""
    return _HREF.sub(f'href="{CLICK_URL}"', html)


def _synthetic_items(n: int) -> list[Item]:
    """n long-titled items, alternating a single session and part 2 of a 2-part series, so
    both card partials render; the series' first parts follow (catalog only)."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    shown: list[Item] = []
    siblings: list[Item] = []
    for i in range(n):
        series = i % 2 == 1
        fields: dict[str, Any] = {
            "content_type": "sleep_story",
            "title": f"A Very Long Sleep Story Title Number {i} " + "W" * 80,
            "narrator": "Narrator With A Rather Long Name " + "N" * 8,
            "duration_s": 3725,
            "language": "en",
            "level": "all",
            "is_kids": False,
            "topics": ("sleep",),
            "created_at": created,
            "image_url": f"https://images.calm.example/lint/{i}/{'x' * 60}.jpg",
            "deep_link": f"https://calm.example/app/story/{i}/{'y' * 40}",
            "collection_id": f"lint-series-{i}" if series else None,
        }
        shown.append(Item(item_id=f"lint-{i}", collection_position=2 if series else None, **fields))
        if series:
            siblings.append(Item(item_id=f"lint-{i}-1", collection_position=1, **fields))
    return shown + siblings


def _largest_case(n: int, catalog: Mapping[str, Item] | None) -> tuple[dict[str, Item], list[str]]:
    if catalog:
        longest = sorted(catalog.values(), key=lambda it: -(len(it.title) + len(it.narrator)))
        return dict(catalog), [item.item_id for item in longest[:n]]
    items = _synthetic_items(n)
    return {item.item_id: item for item in items}, [item.item_id for item in items[:n]]


def lint_rendered(campaign: Campaign, catalog: Mapping[str, Item] | None = None) -> list[str]:
    """Render the largest case in every locale and check what a recipient would get."""
    try:
        templates = load_template_set(campaign.template_dir)
    except (ConfigError, RenderError) as exc:
        return [str(exc)]
    sample_catalog, item_ids = _largest_case(campaign.content.max_items, catalog)
    composer = Composer(
        campaign, sample_catalog, LINT_EDITION, templates=templates, share_renders=False
    )
    problems: list[str] = []
    for locale in campaign.audience.locales:
        delivery = sample_delivery(LINT_EDITION, locale, item_ids, who="lint")
        try:
            message = composer.compose(delivery, LINT_DELIVERY_ID)
        except (ConfigError, RenderError) as exc:
            problems.append(f"{LAYOUT}:1: rendering {locale} fails: {exc}")
            continue
        problems += _message_problems(campaign, locale, message.html, message.text)
    return problems


def _message_problems(campaign: Campaign, locale: str, html: str, text: str) -> list[str]:
    where = f"{LAYOUT}:1: rendered {locale}"
    sender = campaign.sender
    problems = [f"{where}: <img src={src!r}> has no alt text" for src in images_without_alt(html)]
    unsubscribe = (
        "<%asm_group_unsubscribe_raw_url%>"
        if sender.list_unsubscribe == "sendgrid"
        else sender.unsubscribe_url.split("{token}")[0]
    )
    if f'href="{escape(unsubscribe, quote=True)}' not in html:
        problems.append(f"{where}: HTML has no unsubscribe link ({unsubscribe})")
    if unsubscribe not in text:
        problems.append(f"{where}: text part has no unsubscribe link ({unsubscribe})")
    if escape(sender.postal_address, quote=True) not in html:
        problems.append(f"{where}: HTML lacks the postal address")
    if sender.postal_address not in text:
        problems.append(f"{where}: text part lacks the postal address")
    if 'name="color-scheme"' not in html:
        problems.append(f'{where}: no <meta name="color-scheme"> (dark mode)')
    if "prefers-color-scheme: dark" not in html:
        problems.append(f"{where}: no @media (prefers-color-scheme: dark) styles")
    size = len(click_tracked(html).encode("utf-8"))
    if size >= MAX_HTML_BYTES:
        problems.append(
            f"{where}: HTML is {size:,} bytes after click tracking rewrites its links "
            f"(limit {MAX_HTML_BYTES:,}; Gmail clips at about 102 KB)"
        )
    return problems


__all__ = [
    "CLICK_URL",
    "MAX_HTML_BYTES",
    "click_tracked",
    "images_without_alt",
    "lint_templates",
]
