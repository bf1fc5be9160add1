"""Load a template folder and compile it once: MJML -> HTML (mjml-python), then Jinja2.

A template folder holds::

    layout.mjml            the email; pulls partials in with <mj-include path="..."/>
    partials/*.mjml        header, item card, collection card, footer
    text.txt.j2            the plain-text part
    strings/<locale>.toml  every piece of copy, per locale

Includes are expanded here, textually, before the MJML compile instead of through
mjml-python's ``include_loader``: MRML 6.0.1 renders an included ``mj-section`` without the
body's 600 px width (no ``max-width``, MSO table width 100%), so cards would stretch across
the whole window. Textual expansion keeps every Jinja placeholder intact and a line map lets
errors name the partial and line they come from.

Locale strings are passed in the render context (``t``) rather than baked in, so a single
compile of the HTML serves every locale; what is cached per locale is the parsed strings and
the compiled subject and preheader templates. Per-user work is only ``Template.render``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from mjml import mjml2html

from calm_mail.campaign import MAX_HEADER_TEXT, is_one_line, read_toml
from calm_mail.errors import ConfigError, RenderError

LAYOUT = "layout.mjml"
TEXT = "text.txt.j2"
STRINGS = "strings"
BASE_LOCALE = "en-US"

_INCLUDE = re.compile(r'^\s*<mj-include\s+path="([^"]+)"\s*/>\s*$')
_INCLUDE_ANYWHERE = re.compile(r"<mj-include\b")
_POSITION = re.compile(r"at position (\d+):(\d+)")


def html_environment() -> jinja2.Environment:
    """The HTML part's Jinja environment: autoescape on, undefined names fail loudly."""
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def text_environment() -> jinja2.Environment:
    """For the text part, subject and preheader: no escaping (catalog text stays intact)."""
    return jinja2.Environment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


# --------------------------------------------------------------------------- MJML source


@dataclass(frozen=True, slots=True)
class MjmlSource:
    """The layout with every include expanded, and where each of its lines came from."""

    text: str
    origins: tuple[tuple[str, int], ...]  # merged line i (0-based) -> (relative file, line)

    def origin(self, line: int) -> str:
        """`file:line` for a 1-based line of the merged text."""
        if not self.origins:
            return f"{LAYOUT}:1"
        name, number = self.origins[min(max(line, 1), len(self.origins)) - 1]
        return f"{name}:{number}"

    def origin_of_offset(self, byte_offset: int) -> str:
        """`file:line` for a byte offset into the merged text (MRML reports byte spans)."""
        line = self.text.encode("utf-8")[:byte_offset].count(b"\n") + 1
        return self.origin(line)


def expand_includes(directory: Path, name: str = LAYOUT, _depth: int = 0) -> MjmlSource:
    """Read `name` under `directory` and splice each `<mj-include path="..."/>` line in.

    An include must stand on its own line. Raises ConfigError naming file and line for a
    missing file, an include inside a line, or includes nested more than 8 deep.
    """
    path = directory / name
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    lines: list[str] = []
    origins: list[tuple[str, int]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        match = _INCLUDE.match(line)
        if match is None:
            if _INCLUDE_ANYWHERE.search(line):
                raise ConfigError(f'{name}:{number}: put <mj-include path="..."/> on its own line')
            lines.append(line)
            origins.append((name, number))
            continue
        if _depth >= 8:
            raise ConfigError(f"{name}:{number}: includes nested more than 8 deep")
        target = match[1]
        if not (directory / target).is_file():
            raise ConfigError(f"{name}:{number}: included file {target!r} does not exist")
        inner = expand_includes(directory, target, _depth + 1)
        lines.extend(inner.text.split("\n"))
        origins.extend(inner.origins)
    return MjmlSource(text="\n".join(lines), origins=tuple(origins))


_TAG = re.compile(r"<(/?)(mjml|mj-[a-z-]+)\b[^>]*?(/?)>", re.DOTALL)


def locate_unbalanced(source: MjmlSource) -> str | None:
    """Find the first mismatched or unclosed MJML tag, as `file:line: what`.

    MRML often reports only "unexpected end of stream"; this points at the culprit.
    """
    stack: list[tuple[str, int]] = []
    for match in _TAG.finditer(source.text):
        closing, tag, self_closing = match[1], match[2], match[3]
        line = source.text.count("\n", 0, match.start()) + 1
        if self_closing:
            continue
        if not closing:
            stack.append((tag, line))
        elif not stack or stack[-1][0] != tag:
            return f"{source.origin(line)}: </{tag}> closes nothing open"
        else:
            stack.pop()
    if stack:
        tag, line = stack[-1]
        return f"{source.origin(line)}: <{tag}> is never closed"
    return None


def compile_mjml(source: MjmlSource) -> str:
    """MJML -> HTML with mjml-python, Jinja placeholders kept. RenderError names file:line."""
    try:
        return mjml2html(source.text, disable_comments=True, fonts={})
    except ValueError as exc:
        raise RenderError(describe_mjml_error(source, exc)) from exc


def describe_mjml_error(source: MjmlSource, exc: ValueError) -> str:
    """Turn MRML's message into `file:line: MJML does not parse: ...`."""
    position = _POSITION.search(str(exc))
    if position is not None:
        where = source.origin_of_offset(int(position[1]))
        return f"{where}: MJML does not parse: {exc}"
    located = locate_unbalanced(source)
    if located is not None:
        return f"{located} (MJML does not parse: {exc})"
    return f"{source.origin(1)}: MJML does not parse: {exc}"


# --------------------------------------------------------------------------- strings


@dataclass(frozen=True, slots=True)
class LocaleStrings:
    """One locale's copy. `values` is flat: nested TOML tables become dotted keys too."""

    locale: str
    path: Path
    values: Mapping[str, Any]  # as read, nested tables kept (templates use t.types.sleep_story)

    def flat(self) -> dict[str, str]:
        return dict(_flatten(self.values))

    def get(self, dotted: str) -> str:
        """The string at `dotted` ("types.music"); ConfigError naming file and key if absent."""
        value: Any = self.values
        try:
            for part in dotted.split("."):
                value = value[part]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: required key {dotted!r} is missing") from exc
        return str(value)

    def format(self, dotted: str, **fields: object) -> str:
        """`get(dotted).format(**fields)`; ConfigError when its {placeholders} do not fit."""
        template = self.get(dotted)
        try:
            return template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            expected = ", ".join(f"{{{name}}}" for name in fields)
            raise ConfigError(
                f"{self.path}: {dotted}: {template!r} does not fit its placeholders "
                f"({expected}): {exc!r}"
            ) from exc


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", str(value)))
    return out


# The strings that become header lines (Subject) or the inbox preview text.
HEADER_STRINGS = ("subject", "preheader")


def load_strings(directory: Path, locale: str) -> LocaleStrings:
    """Read `strings/<locale>.toml`. ConfigError (file: what) when missing, unreadable (a
    locale too long for a file name), not TOML, or when a header string is not one line of
    at most MAX_HEADER_TEXT characters."""
    path = directory / STRINGS / f"{locale}.toml"
    try:
        found = path.exists()
    except OSError as exc:  # ENAMETOOLONG and the like: exists() hides only "not found"
        raise ConfigError(f"{path}: no strings for locale {locale!r}: {exc.strerror}") from exc
    if not found:
        raise ConfigError(f"{path}: no strings for locale {locale!r}")
    values = read_toml(path)
    problems = [_header_problem(path, key, values.get(key)) for key in HEADER_STRINGS]
    if any(problems):
        raise ConfigError([p for p in problems if p])
    return LocaleStrings(locale=locale, path=path, values=values)


def _header_problem(path: Path, key: str, value: object) -> str | None:
    """Why the string `key` cannot be a header line, or None (absent is `get`'s business)."""
    if not isinstance(value, str):
        return None if value is None else f"{path}: {key}: must be a string"
    if len(value) > MAX_HEADER_TEXT:
        return f"{path}: {key}: {len(value)} characters; at most {MAX_HEADER_TEXT} (RFC 5322)"
    if not is_one_line(value):
        return f"{path}: {key}: must be one line of printable text (no control characters)"
    return None


# --------------------------------------------------------------------------- compiled set


@dataclass(slots=True)
class CompiledLocale:
    """What one locale renders with: its strings and the compiled Jinja templates."""

    strings: LocaleStrings
    html: jinja2.Template
    text: jinja2.Template
    subject: jinja2.Template
    preheader: jinja2.Template


@dataclass(slots=True)
class TemplateSet:
    """A template folder compiled once; per-locale parts are built on first use and cached."""

    directory: Path
    html_source: str  # MJML compiled to HTML, Jinja placeholders intact
    text_source: str
    _html: jinja2.Template
    _text: jinja2.Template
    _locales: dict[str, CompiledLocale] = field(default_factory=dict)

    def for_locale(self, locale: str) -> CompiledLocale:
        """The compiled templates for `locale`; ConfigError when it has no strings file."""
        cached = self._locales.get(locale)
        if cached is None:
            strings = load_strings(self.directory, locale)
            cached = CompiledLocale(
                strings=strings,
                html=self._html,
                text=self._text,
                subject=_string_template(strings, "subject"),
                preheader=_string_template(strings, "preheader"),
            )
            self._locales[locale] = cached
        return cached


def _string_template(strings: LocaleStrings, key: str) -> jinja2.Template:
    try:
        return text_environment().from_string(strings.get(key))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{strings.path}: {key}: not a valid Jinja template: {exc}") from exc


def load_template_set(directory: Path) -> TemplateSet:
    """Expand includes, compile the MJML once, and parse both parts with Jinja2.

    Raises ConfigError for a missing file or bad include, RenderError when MJML or Jinja fail
    to parse; every message names the template file and line.
    """
    source = expand_includes(directory)
    html_source = compile_mjml(source)
    text_path = directory / TEXT
    try:
        text_source = text_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{text_path}: cannot read: {exc.strerror}") from exc
    html = _parse(html_environment(), html_source, f"{LAYOUT} (compiled)")
    text = _parse(text_environment(), text_source, TEXT)
    return TemplateSet(directory, html_source, text_source, html, text)


def _parse(env: jinja2.Environment, source: str, name: str) -> jinja2.Template:
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{name}:{exc.lineno}: Jinja does not parse: {exc.message}") from exc
