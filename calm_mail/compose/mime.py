"""A composed message as RFC 5322 MIME: for the outbox (.eml files) and for inspection.

Deterministic on purpose: the Date comes from the planned send time, the Message-ID and the
MIME boundary from the delivery id, so re-running a dry-run edition reproduces the same bytes.
"""

from __future__ import annotations

from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from calm_mail.records import ComposedMessage

DELIVERY_HEADER = "X-Calm-Delivery-Id"


def message_id(msg: ComposedMessage) -> str:
    """`<delivery_id@sending domain>`: stable across re-runs, unique per delivery."""
    domain = msg.from_email.rpartition("@")[2]
    return f"<{msg.delivery_id}@{domain}>"


def _address(email: str, name: str = "") -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def to_email_message(msg: ComposedMessage) -> EmailMessage:
    """multipart/alternative, text/plain first then text/html (both utf-8), with From (display
    name), To, Reply-To, Subject, Date, Message-ID, the campaign's List-Unsubscribe headers and
    X-Calm-Delivery-Id.
    """
    out = EmailMessage(policy=policy.default)
    out["From"] = _address(msg.from_email, msg.from_name)
    out["To"] = _address(msg.to_email)
    if msg.reply_to:
        out["Reply-To"] = _address(msg.reply_to)
    out["Subject"] = msg.subject
    out["Date"] = format_datetime(msg.send_at)
    out["Message-ID"] = message_id(msg)
    for name, value in msg.headers.items():
        out[name] = value
    out[DELIVERY_HEADER] = msg.delivery_id
    out.set_content(msg.text, subtype="plain", charset="utf-8")
    out.add_alternative(msg.html, subtype="html", charset="utf-8")
    out.set_boundary(f"=_calm_{msg.delivery_id}")
    return out


def to_eml_bytes(msg: ComposedMessage) -> bytes:
    """The message as .eml bytes (CRLF line ends): the same message gives the same bytes."""
    return to_email_message(msg).as_bytes(policy=policy.SMTP)
