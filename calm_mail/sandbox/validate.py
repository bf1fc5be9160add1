"""Validation of `POST /v3/mail/send` bodies, the way SendGrid answers them.

Two layers:
- the `PostMailSend` request body schema from SendGrid's OpenAPI spec (vendored in `specs/`),
  with the spec's known quirks patched (message-level `custom_args` is an object, not a string;
  unknown keys stay allowed), checked by jsonschema (formats are not checked: SendGrid's own
  address rules are below).
- the cross-field limits the schema cannot express (shared/reference/sendgrid.md §1.2), with
  SendGrid's own messages from its errors page.

Every problem is reported at once, with dotted field paths such as
`personalizations.0.to.0.email`. Nothing here raises on junk input: any JSON value gives a list.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import orjson

HELP_BASE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
MAX_AHEAD_S = 72 * 3600
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_ADDRESS_LEN = 320
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
_EXAMPLE = (
    'e.g. {"email": "example@example.com"} or '
    '{"email": "example@example.com", "name": "Example Recipient"}'
)
_ADDRESS = re.compile(
    r"^[^\s@<>(),;:\"\[\]\\]+@[^\s@<>(),;:\"\[\]\\.]+(\.[^\s@<>(),;:\"\[\]\\.]+)+$"
)
_CRLF = re.compile(r"[\r\n]")
_BAD_TYPE = re.compile(r"[;\r\n]")
_BYPASSES = ("bypass_spam_management", "bypass_bounce_management", "bypass_unsubscribe_management")


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of SendGrid's `{"errors": [...]}` body."""

    message: str
    field: str | None = None
    help: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"message": self.message, "field": self.field, "help": self.help}


def _err(message: str, field: str | None, anchor: str | None = None) -> ApiError:
    """An error whose help link points at SendGrid's errors page for the field."""
    if anchor is None and field is not None:
        anchor = _template(field).removesuffix(".email").removesuffix(".name")
    return ApiError(message, field, HELP_BASE + anchor if anchor else None)


def _template(field: str) -> str:
    """`personalizations.0.to.1.email` -> `personalizations.to.email`."""
    return ".".join(part for part in field.split(".") if not part.isdigit())


# --------------------------------------------------------------------------- schema


def spec_text(name: str) -> str:
    """The text of a vendored spec file (package data under `calm_mail/sandbox/specs/`)."""
    return resources.files("calm_mail.sandbox").joinpath("specs", name).read_text("utf-8")


@cache
def mail_send_schema() -> dict[str, Any]:
    """The `PostMailSend` body schema, self-contained (refs inlined) and with quirks patched."""
    spec = json.loads(spec_text("tsg_mail_v3.json"))
    body = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    schema: dict[str, Any] = _inline_refs(body["schema"], spec)
    # Quirk: the spec types it "string"; the docs and the official helper send an object.
    # Value types and sizes are checked below with SendGrid's own messages.
    schema["properties"]["custom_args"] = {"type": "object"}
    return schema


def _inline_refs(node: Any, spec: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline_refs(merged, spec)
        return {k: _inline_refs(v, spec) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, spec) for v in node]
    return node


# (template field, jsonschema keyword or "*") -> message; "{n}" is the offending count.
_SCHEMA_MESSAGES: dict[tuple[str, str], str] = {
    ("personalizations", "maxItems"): (
        "The personalization block is limited to 1000 personalizations per API request. You "
        "have provided {n} personalizations. Please consider splitting this into multiple "
        "requests and resending your request."
    ),
    ("personalizations", "*"): "You must have at least one personalization.",
    (
        "personalizations.to",
        "required",
    ): "The to parameter is required for all personalization objects.",
    ("personalizations.to", "*"): (
        "The to array must at least have an email parameter with a valid email address and it "
        "may also contain a name parameter. " + _EXAMPLE
    ),
    ("personalizations.to.email", "*"): "Does not contain a valid address.",
    ("personalizations.cc", "*"): (
        "The cc array, when used, must at least have an email parameter with a valid email "
        "address and it may also contain a name parameter. " + _EXAMPLE
    ),
    ("personalizations.bcc", "*"): (
        "The bcc array, when used, must at least have an email parameter with a valid email "
        "address and it may also contain a name parameter. " + _EXAMPLE
    ),
    (
        "personalizations.subject",
        "*",
    ): "The subject of your email must be a string at least one character in length.",
    ("personalizations.substitutions", "*"): (
        "The substitution values must be an object of key/value pairs, where the values are "
        "all strings."
    ),
    ("personalizations.custom_args", "*"): "All values of custom arguments object must be strings",
    ("personalizations.headers", "*"): "All values of the headers object must be strings.",
    ("personalizations.send_at", "*"): (
        "The send_at parameter is expecting a Unix timestamp as an integer. We will send "
        "immediately if you include a send_at timestamp that is in the past."
    ),
    ("from", "required"): (
        "The from object must be provided for every email send. It is an object that requires "
        "the email parameter, but may also contain a name parameter. " + _EXAMPLE
    ),
    ("from", "*"): (
        "The from object must at least have an email parameter with a valid email address and "
        "may also contain a name parameter. " + _EXAMPLE
    ),
    ("from.email", "*"): "The from email does not contain a valid address.",
    ("reply_to", "*"): (
        "The reply_to object, when used, must at least have an email parameter with a valid "
        "email address and it may also contain a name parameter. " + _EXAMPLE
    ),
    ("reply_to_list", "*"): (
        "The reply_to_list must be a unique list of at most 1000 objects, each with a valid "
        "email address and optionally a name."
    ),
    (
        "subject",
        "*",
    ): "The subject of your email must be a string at least one character in length.",
    ("content", "*"): (
        "There must be at least one defined content block. We typically suggest both "
        "text/plain and text/html blocks are included, but only one block is required."
    ),
    (
        "content.type",
        "*",
    ): "Your content type must be a string with length of at least one character.",
    ("content.value", "*"): "The content value must be a string at least one character in length.",
    (
        "attachments.content",
        "*",
    ): "The attachment content must be a string at least one character in length.",
    ("attachments.filename", "required"): "filename is required.",
    ("attachments.filename", "*"): "The filename of your attachment must be a string.",
    (
        "attachments.type",
        "*",
    ): "The attachment type must be a string and at least one character in length.",
    (
        "attachments.disposition",
        "*",
    ): 'The disposition of your attachment can be either "inline" or "attachment".',
    ("attachments.content_id", "*"): "The content ID of your attachment must be a string.",
    ("template_id", "*"): "The template ID must be a string.",
    ("headers", "*"): "The header values must be strings.",
    ("categories", "maxItems"): (
        "There is a limit of 10 categories for each email that is sent. You provided {n} "
        "categories."
    ),
    ("categories", "uniqueItems"): (
        "The categories must be a unique list, and you have included a category more than once."
    ),
    ("categories", "maxLength"): "Each category must not be longer than 255 characters.",
    ("categories", "*"): "Categories must be an array of strings.",
    ("custom_args", "*"): "All values of custom arguments object must be strings",
    ("send_at", "*"): (
        "The send_at parameter is expecting a Unix timestamp as an integer. We will send "
        "immediately if you include a send_at timestamp that is in the past."
    ),
    ("batch_id", "*"): "The batch_id must be a string.",
    ("asm", "*"): "The asm object must contain an integer group_id.",
    ("asm.group_id", "*"): "The ASM group ID must be an integer.",
    (
        "asm.groups_to_display",
        "maxItems",
    ): "There is a limit of 25 unsubscribe groups that can be displayed to a user at a time.",
    ("asm.groups_to_display", "*"): "The ASM Group IDs to display must be an array of integers.",
    ("ip_pool_name", "*"): "The name of your IP pool must be a string of 2 to 64 characters.",
    (
        "mail_settings.sandbox_mode.enable",
        "*",
    ): "The sandbox mode enable param should be a boolean value.",
    ("mail_settings.footer.enable", "*"): "The footer enable param should be a boolean value.",
    ("mail_settings.footer.html", "*"): "The text/html version of your footer should be a string.",
    ("mail_settings.footer.text", "*"): "The text/plain version of your footer should be a string.",
    (
        "mail_settings.bypass_list_management.enable",
        "*",
    ): "The bypass list management enable param should be a boolean value.",
    (
        "tracking_settings.click_tracking.enable",
        "*",
    ): "The click tracking enable param should be a boolean value.",
    (
        "tracking_settings.click_tracking.enable_text",
        "*",
    ): "The click tracking enable text must be a boolean value.",
    (
        "tracking_settings.open_tracking.enable",
        "*",
    ): "The open tracking enable param should be a boolean value.",
    (
        "tracking_settings.open_tracking.substitution_tag",
        "*",
    ): "The open tracking substitution tag must be a string.",
    (
        "tracking_settings.subscription_tracking.enable",
        "*",
    ): "The subscription tracking enable param should be a boolean value.",
    (
        "tracking_settings.ganalytics.enable",
        "*",
    ): "The Google Analytics enable param must be a boolean value.",
}
for _list in ("cc", "bcc"):  # cc/bcc entries share the to entry's messages
    _SCHEMA_MESSAGES[(f"personalizations.{_list}.email", "*")] = "Does not contain a valid address."
_SCHEMA_MESSAGES[("reply_to.email", "*")] = "The reply_to email does not contain a valid address."


def _schema_message(field: str, keyword: str, instance: Any) -> str:
    """SendGrid's message for a schema violation at `field`, falling back to the parents."""
    template = _template(field)
    while True:
        for key in ((template, keyword), (template, "*")):
            if key in _SCHEMA_MESSAGES:
                n = len(instance) if isinstance(instance, list | dict) else 0
                return _SCHEMA_MESSAGES[key].replace("{n}", str(n))
        if "." not in template:
            break
        template = template.rsplit(".", 1)[0]
    return "invalid request" if not field else f"The {template or field} field is invalid."


def _schema_errors(validator: jsonschema.protocols.Validator, body: Any) -> Iterator[ApiError]:
    for error in validator.iter_errors(body):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            required: Any = error.validator_value
            for name in required:
                if name not in error.instance:
                    field = f"{path}.{name}" if path else name
                    yield _err(_schema_message(field, "required", None), field)
            continue
        yield _err(_schema_message(path, str(error.validator), error.instance), path or None)


# --------------------------------------------------------------------------- cross-field


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _address_errors(entry: Any, field: str, label: str) -> Iterator[ApiError]:
    """An email object's address must look like an address and be at most 320 characters."""
    email = _as_dict(entry).get("email")
    if not isinstance(email, str):
        return
    if len(email) > MAX_ADDRESS_LEN:
        yield _err(
            f"The {label} email exceeds the maximum total length of 320 characters",
            f"{field}.email",
        )
    elif not _ADDRESS.match(email):
        prefix = "Does" if label in ("To", "CC", "BCC") else f"The {label.lower()} email does"
        yield _err(f"{prefix} not contain a valid address.", f"{field}.email")


def _recipient_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    personalizations = _as_list(body.get("personalizations"))
    if (
        "personalizations" in body
        and isinstance(body["personalizations"], list)
        and not personalizations
    ):
        yield _err("You must have at least one personalization.", "personalizations")
    seen: set[str] = set()
    total = 0
    for i, p in enumerate(personalizations):
        if isinstance(p, dict) and isinstance(p.get("to"), list) and not p["to"]:
            yield _err(_SCHEMA_MESSAGES[("personalizations.to", "*")], f"personalizations.{i}.to")
        for kind, label in (("to", "To"), ("cc", "CC"), ("bcc", "BCC")):
            for j, entry in enumerate(_as_list(_as_dict(p).get(kind))):
                field = f"personalizations.{i}.{kind}.{j}"
                total += 1
                yield from _address_errors(entry, field, label)
                yield from _name_errors(entry, field, kind)
                email = _as_dict(entry).get("email")
                if isinstance(email, str):
                    key = email.strip().lower()
                    if key in seen:
                        yield _err(
                            "Each unique email address in the personalizations array "
                            f"should only be included once. You have included {email} "
                            "more than once.",
                            f"{field}.email",
                            "personalizations",
                        )
                    seen.add(key)
    if total > MAX_RECIPIENTS:
        yield _err(
            "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
            "personalizations",
        )


def _name_errors(entry: Any, field: str, kind: str) -> Iterator[ApiError]:
    name = _as_dict(entry).get("name")
    if isinstance(name, str) and (";" in name or "," in name):
        yield _err(
            f"The {kind} name cannot contain ';' or ',' characters.",
            f"{field}.name",
            f"personalizations.{kind}",
        )


def _sender_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    sender = body.get("from")
    yield from _address_errors(sender, "from", "From")
    email = _as_dict(sender).get("email")
    if isinstance(email, str) and not email.isascii():
        yield _err("The from email cannot contain Unicode characters.", "from.email")
    for i, p in enumerate(_as_list(body.get("personalizations"))):
        yield from _address_errors(_as_dict(p).get("from"), f"personalizations.{i}.from", "From")
    if "reply_to" in body and "reply_to_list" in body:
        yield _err(
            "The reply_to and reply_to_list fields are mutually exclusive.",
            "reply_to_list",
            "reply_to",
        )
    yield from _address_errors(body.get("reply_to"), "reply_to", "Reply-To")
    for i, entry in enumerate(_as_list(body.get("reply_to_list"))):
        yield from _address_errors(entry, f"reply_to_list.{i}", "Reply-To")


def _subject_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    if "subject" in body or isinstance(body.get("template_id"), str):
        return
    personalizations = _as_list(body.get("personalizations"))
    if personalizations and all("subject" in _as_dict(p) for p in personalizations):
        return
    yield _err(
        "The subject is required. You can get around this requirement if you use a "
        "template with a subject defined or if every personalization has a subject "
        "defined.",
        "subject",
    )


def _content_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    content = body.get("content")
    if content is None:
        if not isinstance(body.get("template_id"), str):
            yield _err(
                "The content param is required unless you are using a transactional "
                "template and have defined a template_ID.",
                "content",
            )
        return
    if isinstance(content, list) and not content and not isinstance(body.get("template_id"), str):
        yield _err(_SCHEMA_MESSAGES[("content", "*")], "content")
    types = [_as_dict(c).get("type") for c in _as_list(content)]
    for i, kind in enumerate(types):
        if isinstance(kind, str) and _BAD_TYPE.search(kind):
            yield _err("Cannot contain ';', or CRLF characters.", f"content.{i}.type")
    ranks = [
        {"text/plain": 0, "text/html": 1}.get(k.lower(), 2) if isinstance(k, str) else 2
        for k in types
    ]
    if ranks != sorted(ranks):
        yield _err(
            "Following RFC 1341, section 7.2, if either text/html or text/plain are to be "
            "sent in your email: text/plain needs to be first, followed by text/html, "
            "followed by any other content.",
            "content",
            "content.value",
        )


def _category_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    for i, category in enumerate(_as_list(body.get("categories"))):
        if isinstance(category, str) and not category.isascii():
            yield _err("Categories can not contain non-ASCII characters.", f"categories.{i}")


def _json_size(value: Mapping[str, Any]) -> int:
    """Bytes of the compact UTF-8 JSON form; junk that cannot be serialised counts as huge."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return MAX_CUSTOM_ARGS_BYTES + 1


def _custom_args_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    top = body.get("custom_args")
    yield from _string_map_errors(top, "custom_args")
    base = _as_dict(top)
    for i, p in enumerate(_as_list(body.get("personalizations"))):
        own = _as_dict(p).get("custom_args")
        yield from _string_map_errors(own, f"personalizations.{i}.custom_args")
        merged = {**base, **_as_dict(own)}
        if merged and _json_size(merged) > MAX_CUSTOM_ARGS_BYTES:
            yield _err(
                "The combined size of both global and personalization custom arguments "
                "may not exceed 10,000 bytes per personalization.",
                f"personalizations.{i}.custom_args",
            )
        subs = _as_dict(p).get("substitutions")
        if isinstance(subs, dict) and _json_size(subs) > MAX_SUBSTITUTIONS_BYTES:
            yield _err(
                "You are limited to 10,000 bytes of substitutions per personalization.",
                f"personalizations.{i}.substitutions",
            )


def _string_map_errors(value: Any, field: str) -> Iterator[ApiError]:
    if not isinstance(value, dict):
        return
    anchor = "personalizations.custom_args"
    if not value:
        yield _err("custom_args cannot be empty.", field, anchor)
    elif not all(isinstance(v, str) for v in value.values()):
        yield _err("All values of custom arguments object must be strings", field, anchor)


def _header_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    places = [("headers", body.get("headers"))]
    places += [
        (f"personalizations.{i}.headers", _as_dict(p).get("headers"))
        for i, p in enumerate(_as_list(body.get("personalizations")))
    ]
    for field, headers in places:
        if not isinstance(headers, dict):
            continue
        anchor = _template(field)
        if not all(isinstance(v, str) for v in headers.values()):
            yield _err("The header values must be strings.", field, anchor)
        lowered = [k.lower() for k in headers]
        if len(set(lowered)) != len(lowered):
            yield _err("The headers cannot contain duplicate keys.", field, anchor)
        if any(not k.isascii() or " " in k or not k for k in headers):
            yield _err(
                "Header keys cannot contain non-ASCII characters and empty spaces.", field, anchor
            )
        if any(k in RESERVED_HEADERS for k in lowered):
            yield _err("Header can not be one of the reserved keys.", field, anchor)


def _send_at_errors(body: Mapping[str, Any], now: float) -> Iterator[ApiError]:
    places = [("send_at", body.get("send_at"))]
    places += [
        (f"personalizations.{i}.send_at", _as_dict(p).get("send_at"))
        for i, p in enumerate(_as_list(body.get("personalizations")))
    ]
    for field, value in places:
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and value > now + MAX_AHEAD_S
        ):
            yield _err("Scheduling more than 72 hours in advance is forbidden.", field)


def _attachment_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    for i, att in enumerate(_as_list(body.get("attachments"))):
        att = _as_dict(att)
        content = att.get("content")
        if isinstance(content, str) and content and not _is_base64(content):
            yield _err("The attachment content must be base64 encoded.", f"attachments.{i}.content")
        for key, pattern, message in (
            ("filename", _CRLF, "The filename of your attachment cannot contain CRLF characters."),
            ("type", _BAD_TYPE, "The type cannot contain ';', or CRLF characters."),
            (
                "content_id",
                _CRLF,
                "The content ID of your attachment cannot contain CRLF characters.",
            ),
        ):
            value = att.get(key)
            if isinstance(value, str) and pattern.search(value):
                yield _err(message, f"attachments.{i}.{key}")


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _settings_errors(body: Mapping[str, Any]) -> Iterator[ApiError]:
    settings = _as_dict(body.get("mail_settings"))
    if _as_dict(settings.get("bypass_list_management")).get("enable") is True and any(
        _as_dict(settings.get(name)).get("enable") is True for name in _BYPASSES
    ):
        yield _err(
            "The bypass_list_management setting cannot be combined with the other bypass filters.",
            "mail_settings.bypass_list_management",
        )


def _batch_errors(
    body: Mapping[str, Any], batch_exists: Callable[[str], bool]
) -> Iterator[ApiError]:
    batch_id = body.get("batch_id")
    if isinstance(batch_id, str) and not batch_exists(batch_id):
        yield _err("invalid batch id", "batch_id")


# --------------------------------------------------------------------------- entry point


class MailSendValidator:
    """Compiled once; `errors(body, ...)` lists every problem of one request body."""

    def __init__(self) -> None:
        self._schema = jsonschema.Draft202012Validator(mail_send_schema())

    def errors(
        self, body: Any, *, now: float, batch_exists: Callable[[str], bool] = lambda _: True
    ) -> list[ApiError]:
        """Every schema and cross-field problem; empty when SendGrid would accept the body."""
        found = list(_schema_errors(self._schema, body))
        if isinstance(body, dict):
            for check in (
                _recipient_errors,
                _sender_errors,
                _subject_errors,
                _content_errors,
                _category_errors,
                _custom_args_errors,
                _header_errors,
                _attachment_errors,
                _settings_errors,
            ):
                found.extend(check(body))
            found.extend(_send_at_errors(body, now))
            found.extend(_batch_errors(body, batch_exists))
        return _unique(found)


def _unique(errors: list[ApiError]) -> list[ApiError]:
    seen: set[tuple[str, str | None]] = set()
    out = []
    for error in errors:
        key = (error.message, error.field)
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out
