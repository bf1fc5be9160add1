"""The composed message as RFC 5322 MIME: read back by Python's `email` parser byte for byte,
headers, part order, line lengths, determinism."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from calm_mail.compose.composer import Composer
from calm_mail.compose.mime import message_id, to_eml_bytes
from calm_mail.errors import RenderError
from calm_mail.records import ComposedMessage

from .conftest import NASTY_TITLE, DeliveryFactory

DELIVERY_ID = "Mime0123456789abcdef_-"
UNSUBSCRIBE = (
    "<https://calm.example/email/unsubscribe/{id}>, "
    "<mailto:unsubscribe@mail.calm.example?subject=unsubscribe-{id}>"
)


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def wire(text: str) -> bytes:
    """What a body part decodes to: its text in utf-8, each "\\n" a CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def message(**overrides: object) -> ComposedMessage:
    fields: dict[str, object] = {
        "delivery_id": DELIVERY_ID,
        "to_email": "reader@example.com",
        "from_email": "winddown@mail.calm.example",
        "from_name": "Calm",
        "reply_to": "hello@calm.example",
        "subject": "Your Weekly Winddown",
        "preheader": "",
        "html": "<html><body><p>Hello</p></body></html>",
        "text": "Hello\n",
        "headers": {
            "List-Unsubscribe": UNSUBSCRIBE.format(id=DELIVERY_ID),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ("weekly_winddown",),
        "custom_args": {"delivery_id": DELIVERY_ID, "arm": "personalized"},
        "send_at": datetime(2026, 7, 4, 12, tzinfo=UTC),
    }
    fields.update(overrides)
    return ComposedMessage(**fields)  # type: ignore[arg-type]


def assert_reads_back(msg: ComposedMessage) -> None:
    """Every header and both parts, as the `email` package reads the bytes."""
    raw = to_eml_bytes(msg)
    parsed = parse(raw)
    assert not parsed.defects, parsed.defects
    [sender] = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (msg.from_name, msg.from_email)
    assert parsed["To"].addresses[0].addr_spec == msg.to_email
    assert parsed["Reply-To"].addresses[0].addr_spec == msg.reply_to
    assert parsed["Subject"] == msg.subject
    assert parsed["Date"].datetime == msg.send_at
    assert parsed["Message-ID"] == message_id(msg)
    for name, value in msg.headers.items():
        assert parsed[name] == value
    assert parsed["X-Calm-Delivery-Id"] == msg.delivery_id
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert [text.get_content_type(), html.get_content_type()] == ["text/plain", "text/html"]
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert not text.defects and not html.defects
    assert text.get_payload(decode=True) == wire(msg.text)
    assert html.get_payload(decode=True) == wire(msg.html)
    assert_smtp_safe(raw)


def assert_smtp_safe(raw: bytes) -> None:
    """CRLF line ends only; header lines of at most 78 unless one word is longer (998 at
    most), body lines of at most 76."""
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    for line in header_lines(raw):
        one_word = b" " not in line.lstrip(b" ").split(b": ", 1)[-1]
        assert len(line) <= 78 or (one_word and len(line) <= 998), line
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


# Lines that encoders and transports treat specially, and text a generator would rarely draw.
_LINES = st.sampled_from(
    [
        "From the editors",
        ".",
        ". ",
        "..",
        "trailing spaces   ",
        "tab\t",
        " leading",
        "",
        "=3D = ==",
        "x" * 75 + " ",
        "y" * 300,
        "é" * 80,
        "🌙 Sleep well ✨👨‍👩‍👧",
        "a\rb",
        "c\r",
        "--=_calm_x",
        "\x00\x7f",
    ]
)
_TEXT = st.lists(
    st.one_of(_LINES, st.text(st.characters(exclude_categories=["Cs"]), max_size=120)),
    max_size=12,
).map("\n".join)
_HEADER_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "Tu pausa semanal: Lluvia y truenos",
            "今週のウィンドダウン：Evening Reset",
            "Your Weekly Winddown: " + "A very long title " * 8,
            "=?utf-8?q?not_encoded?=",
            "Calm, Inc.",
            'O\'Brien & "Sons"',
            "x" * 120,
            "🌙✨",
        ]
    ),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=160),
)
# A display name is one line: a control character in one is refused (tested below).
_NAME = _HEADER_TEXT.filter(lambda name: not re.search(r"[\x00-\x1f\x7f]", name))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_HEADER_TEXT,
    from_name=_NAME,
    text=_TEXT,
    html=_TEXT,
    offset=st.integers(-12 * 60, 14 * 60),
)
@example(subject="", from_name="", text="", html="", offset=0)
def test_the_email_parser_reads_every_header_and_part_back(
    subject: str, from_name: str, text: str, html: str, offset: int
) -> None:
    zone = timezone(timedelta(minutes=offset))
    send_at = datetime(2026, 7, 4, 12, tzinfo=UTC).astimezone(zone)
    assert_reads_back(
        message(subject=subject, from_name=from_name, text=text, html=html, send_at=send_at)
    )


def test_composed_emails_read_back(composer: Composer, delivery: DeliveryFactory) -> None:
    for locale in ("en-US", "fr-FR", "ja-JP", "de-DE"):
        msg = composer.compose(delivery(locale=locale), DELIVERY_ID)
        assert_reads_back(msg)
        assert NASTY_TITLE in msg.text


def test_headers_follow_rfc_5322_and_8058(composer: Composer, delivery: DeliveryFactory) -> None:
    msg = composer.compose(delivery(locale="fr-FR"), DELIVERY_ID)
    parsed = parse(to_eml_bytes(msg))
    assert parsed["From"] == "Calm <winddown@mail.calm.example>"
    assert parsed["To"] == "reader@example.com"
    assert parsed["Reply-To"] == "hello@calm.example"
    assert parsed["Subject"] == msg.subject and "Votre pause" in parsed["Subject"]
    assert parsed["Date"].datetime == msg.send_at
    assert parsed["Message-ID"] == f"<{DELIVERY_ID}@mail.calm.example>"
    assert parsed["X-Calm-Delivery-Id"] == DELIVERY_ID
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE.format(id=DELIVERY_ID)


def test_list_unsubscribe_is_plain_ascii_in_the_bytes(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    """RFC 2369/8058 clients read the angle-bracketed URLs as they are: no encoded-words, only
    a fold between the two (unfolded, the header is the composed value)."""
    msg = composer.compose(delivery(locale="ja-JP"), DELIVERY_ID)
    raw = to_eml_bytes(msg)
    lines = header_lines(raw)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"List-Unsubscribe:"))
    field = [lines[start], *(line for line in lines[start + 1 :][:1] if line.startswith(b" "))]
    value = b"".join(field).removeprefix(b"List-Unsubscribe: ")
    assert value.decode("ascii") == msg.headers["List-Unsubscribe"]
    assert b"=?" not in b"".join(field)


def test_non_ascii_subjects_and_names_are_encoded_words() -> None:
    msg = message(subject="今週のウィンドダウン：" * 6, from_name="Cálm Équipe")
    lines = header_lines(to_eml_bytes(msg))
    subject = next(line for line in lines if line.startswith(b"Subject:"))
    assert re.fullmatch(rb"Subject: =\?utf-8\?[bq]\?[^?]+\?=", subject)
    assert all(line.isascii() for line in lines)
    assert_reads_back(msg)


def test_a_line_break_in_an_address_or_a_header_is_refused() -> None:
    with pytest.raises(RenderError, match="To"):
        to_eml_bytes(message(to_email="reader@example.com\r\nBcc: x@example.com"))
    with pytest.raises(RenderError, match="From"):
        to_eml_bytes(message(from_name="Calm\nBcc: x@example.com"))
    with pytest.raises(RenderError, match="List-Unsubscribe"):
        to_eml_bytes(message(headers={"List-Unsubscribe": "<https://x>\nBcc: y"}))


def test_eml_bytes_are_deterministic(composer: Composer, delivery: DeliveryFactory) -> None:
    first = to_eml_bytes(composer.compose(delivery(), DELIVERY_ID))
    again = to_eml_bytes(composer.compose(delivery(), DELIVERY_ID))
    assert first == again
    assert f'boundary="=_calm_{DELIVERY_ID}"'.encode() in first
    other = to_eml_bytes(composer.compose(delivery(), "Other0123456789abcdef_"))
    assert other != first
