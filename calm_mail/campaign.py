"""The campaign model: one TOML per campaign under ``campaigns/``, loaded into frozen models.

pydantic does the checking because it reports every problem at once with its key path, which
is what an editor needs: ``campaigns/x.toml: experiment.arms[1].weight: must be greater than 0``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import unicodedata
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from calm_mail.edition import Edition
from calm_mail.errors import ConfigError, UsageError, toml_problem
from calm_mail.records import ContentSource

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_ARN = r"^arn:"
_S3_PREFIX = r"^s3://.+/$"
# A file or folder name under the project (templates/NAME/, rules/NAME.toml, strings/L.toml).
_FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_LOCALE = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"

# Bounds on what the file can carry. Each value ends up in a header, a URL, a file name, a
# ledger column or a loop, so an absurd one is refused here, naming its key, rather than
# failing (or taking minutes) in the middle of an edition.
MAX_ADDRESS = 254  # an address in a mail path (RFC 5321, 4.5.3.1.3)
MAX_URL = 2048  # what browsers, mail clients and SendGrid's link tracking take
MAX_HEADER_TEXT = 998  # one header line (RFC 5322, 2.1.1): a display name, a subject
MAX_NAME = 100  # names that become ledger keys and SendGrid custom_args (campaign, arm)
MAX_TEXT = 200  # titles, experiment names and seeds (hashed once per user)
MAX_DAYS = 3650  # ten years: any day count past it is a typo, and dates overflow at ~2.9e6
MAX_PATH = 4096  # PATH_MAX on Linux; an S3 key is at most 1,024 bytes
MAX_PATH_PART = 255  # NAME_MAX: one component of a path, in bytes


class _Model(BaseModel):
    # inf and nan are valid TOML floats but never a sensible weight, rate or timeout.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _problem(loc: tuple[str | int, ...], message: str, value: object) -> InitErrorDetails:
    """One error at `loc` (relative to the model being validated), in pydantic's own form, so
    cross-field checks land under a meaningful key (`experiment.arms`, not `experiment`)."""
    return InitErrorDetails(type=PydanticCustomError("invalid", message), loc=loc, input=value)


def _reraisable(exc: ValidationError) -> list[InitErrorDetails]:
    """pydantic's errors in a form that can be raised again together with our own."""
    return [
        InitErrorDetails(
            type=PydanticCustomError(err["type"], err["msg"], err.get("ctx")),
            loc=err["loc"],
            input=err["input"],
        )
        for err in exc.errors()
    ]


_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _check_placeholders(path: str) -> str:
    unknown = sorted(set(_PLACEHOLDER.findall(path)) - {"{root}", "{edition}"})
    if unknown:
        raise ValueError(f"unknown placeholder {', '.join(unknown)}; use {{root}} or {{edition}}")
    return path


def _check_path(path: str) -> str:
    """A path no file system refuses outright (no NUL, no component over NAME_MAX bytes) and
    no control character (a line break in a path is a slip, and would split messages)."""
    if "\x00" in path:
        raise ValueError("contains a NUL character")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("contains a control character (a line break?)")
    parts = _PLACEHOLDER.sub("", path).split("/")
    longest = max(len(part.encode("utf-8", "surrogatepass")) for part in parts)
    if longest > MAX_PATH_PART:
        raise ValueError(f"a path component is {longest} bytes long; at most {MAX_PATH_PART}")
    return path


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def is_one_line(value: str) -> bool:
    """Whether `value` can be one header line: no control character or line separator (a
    line break would start a new header); every kind of space is fine."""
    return not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)


def _one_line(value: str) -> str:
    if not is_one_line(value):
        raise ValueError("must be one line of printable text (no control characters)")
    return value


_InputPath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH),
    AfterValidator(_check_placeholders),
    AfterValidator(_check_path),
]
# Bounded text of each kind; NUL is refused everywhere (PostgreSQL cannot store it, headers
# cannot carry it).
_Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]
_HeaderText = Annotated[str, Field(max_length=MAX_HEADER_TEXT), AfterValidator(_no_nul)]
_Address = Annotated[str, Field(max_length=MAX_ADDRESS, pattern=_EMAIL)]
_Url = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_no_nul)]
_Days = Annotated[int, Field(ge=1, le=MAX_DAYS)]
_Arn = Annotated[str, Field(max_length=2048, pattern=_ARN)]
_S3Prefix = Annotated[str, Field(max_length=1024, pattern=_S3_PREFIX), AfterValidator(_check_path)]


class Inputs(_Model):
    """Where the edition's inputs live. Paths or s3:// URIs with {root} and {edition}."""

    catalog: _InputPath
    audience: _InputPath
    recommendations: _InputPath  # a prefix (folder) holding Personalize *.out part files
    editorial: _InputPath
    history: _InputPath
    max_bad_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Of the recommended item ids read, the share the catalog may miss (retired content is
    # dropped and counted); above it the catalog and the output do not belong together.
    max_unknown_item_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_age_days: _Days = 7


class Audience(_Model):
    # A locale names its strings file (strings/<locale>.toml) and fills a 32-character column.
    locales: Annotated[
        tuple[Annotated[str, Field(max_length=32, pattern=_LOCALE)], ...], Field(min_length=1)
    ]
    subscription_statuses: Annotated[tuple[_Text, ...], Field(min_length=1)] = (
        "subscriber",
        "trial",
        "free",
    )
    active_within_days: _Days = 90
    min_days_between_editions: Annotated[int, Field(ge=0, le=MAX_DAYS)] = 6


class Arm(_Model):
    name: Annotated[str, Field(max_length=MAX_NAME, pattern=_NAME.pattern)]
    weight: Annotated[float, Field(gt=0)]
    source: ContentSource


class Experiment(_Model):
    name: Annotated[_Text, Field(min_length=1)]
    seed: Annotated[_Text, Field(min_length=1)]
    arms: Annotated[tuple[Arm, ...], Field(max_length=100)]
    control: Annotated[str, Field(max_length=MAX_NAME)] | None = None  # defaults to the first arm
    # How the test is read: two-sided alpha, the power for sizing, and the relative lift the
    # test should be able to detect (the report says how many users per arm that needs).
    alpha: Annotated[float, Field(gt=0, le=0.5)] = 0.05
    power: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    target_lift: Annotated[float, Field(gt=0, le=10)] = 0.03

    @model_validator(mode="wrap")
    @classmethod
    def _check_arms(cls, data: object, handler: ValidatorFunctionWrapHandler) -> Experiment:
        """Arm names and `control` are checked on the raw table, so they are reported even
        when an arm also has a bad field (pydantic skips after-validators then)."""
        problems = _arm_name_problems(data)
        try:
            experiment: Experiment = handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                cls.__name__, [*_reraisable(exc), *problems]
            ) from None
        if not problems and not math.isfinite(sum(arm.weight for arm in experiment.arms)):
            problems.append(_problem(("arms",), "the weights' sum is too large", None))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return experiment

    @property
    def control_arm(self) -> str:
        return self.control or self.arms[0].name

    @property
    def weights(self) -> dict[str, float]:
        total = sum(arm.weight for arm in self.arms)
        return {arm.name: arm.weight / total for arm in self.arms}


def _arm_name_problems(data: object) -> list[InitErrorDetails]:
    """Empty or repeated arm names and an unknown `control`, read from the raw table."""
    if not isinstance(data, dict) or not isinstance(arms := data.get("arms"), list | tuple):
        return []
    if not arms:
        return [_problem(("arms",), "needs at least one [[experiment.arms]]", arms)]
    names = [arm.get("name") if isinstance(arm, dict) else None for arm in arms]
    problems = []
    repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if repeated:
        problems.append(_problem(("arms",), f"arm names repeat: {', '.join(repeated)}", names))
    control = data.get("control")
    # Only against valid names: a misspelt arm name is reported once, on the arm.
    names_valid = all(isinstance(n, str) and _NAME.match(n) for n in names)
    if isinstance(control, str) and names_valid and control not in names:
        message = f"{control!r} is not an arm's name ({', '.join(map(str, names))})"
        problems.append(_problem(("control",), message, control))
    return problems


class Content(_Model):
    min_items: Annotated[int, Field(ge=1, le=20)] = 3
    max_items: Annotated[int, Field(ge=1, le=20)] = 6
    popular_days: _Days = 28

    @model_validator(mode="after")
    def _check_range(self) -> Content:
        if self.min_items > self.max_items:
            message = f"{self.min_items} exceeds max_items ({self.max_items})"
            problem = _problem(("min_items",), message, self.min_items)
            raise ValidationError.from_exception_data(type(self).__name__, [problem])
        return self


class Sender(_Model):
    """Who the mail is from and its unsubscribe links. Every address, URL and header text is
    bounded (RFC 5321 / 5322 and what mail clients take), so composing stays linear."""

    from_email: _Address
    from_name: Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_one_line)]
    reply_to: _Address | None = None
    categories: tuple[str, ...] = ()
    unsubscribe_group: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    postal_address: Annotated[_HeaderText, Field(min_length=10)]
    # {token} is replaced by each recipient's own token
    unsubscribe_url: Annotated[_Url, Field(pattern=r"^https://")]
    unsubscribe_mailto: _Address | None = None
    preferences_url: _Url | None = None
    list_unsubscribe: Literal["headers", "sendgrid"] = "headers"
    app_link_base: _Url = "https://calm.example/app"

    @field_validator("unsubscribe_url")
    @classmethod
    def _check_token(cls, value: str) -> str:
        if "{token}" not in value:
            raise ValueError("must contain {token}: each recipient's own unsubscribe link")
        return value

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > 10 or len(set(value)) != len(value):
            raise ValueError("at most 10 unique categories (SendGrid's limit)")
        if any(len(c) > 255 or not (c.isascii() and c.isprintable()) for c in value):
            raise ValueError("each category is printable ASCII, at most 255 characters")
        return value


class Schedule(_Model):
    weekday: Literal["saturday", "sunday"] = "saturday"
    local_time: time = time(8, 0)
    use_preferred_hour: bool = False
    fallback_timezone: Annotated[str, Field(max_length=64)] = "America/New_York"
    prepare: _Text = "fri 18:00"  # when the scheduler prepares and sends the edition (UTC)
    max_rate: Annotated[float, Field(gt=0, le=100_000)] = 500.0  # sends per second
    concurrency: Annotated[int, Field(ge=1, le=512)] = 32

    @field_validator("fallback_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "America" is a folder
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class PersonalizeJob(_Model):
    """The optional Personalize batch inference step (calm_mail.ops.personalize_job).

    Prefixes take {root} and {edition}, must be s3:// and end in '/'. The output prefix
    defaults to `inputs.recommendations`, where the planner reads the edition's output.
    """

    enabled: bool = True
    solution_version_arn: _Arn
    role_arn: _Arn
    filter_arn: _Arn | None = None
    filter_values: Annotated[dict[_Text, _HeaderText], Field(max_length=10)] = Field(
        default_factory=dict
    )
    num_results: Annotated[int, Field(ge=1, le=500)] = 25
    input_prefix: _S3Prefix
    output_prefix: _S3Prefix | None = None
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    timeout_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 3 * 3600.0  # at most a week


class Alerts(_Model):
    """Where run summaries and failure alerts go besides the log (calm_mail.ops.alerts).

    Prefer the environment variable named by `slack_webhook_env`: the URL is a secret.
    """

    slack_webhook_url: Annotated[_Url, Field(pattern=r"^https?://")] | None = None
    slack_webhook_env: Annotated[str, Field(min_length=1, max_length=255)] = (
        "CALM_MAIL_SLACK_WEBHOOK_URL"
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0


class CampaignSection(_Model):
    name: Annotated[str, Field(max_length=MAX_NAME, pattern=_NAME.pattern)]
    title: _HeaderText
    template: Annotated[str, Field(max_length=MAX_PATH_PART, pattern=_FILE_NAME)]
    rules: Annotated[str, Field(max_length=MAX_PATH_PART - len(".toml"), pattern=_FILE_NAME)]


class Campaign(_Model):
    campaign: CampaignSection
    inputs: Inputs
    audience: Audience
    experiment: Experiment
    content: Content = Content()
    sender: Sender
    schedule: Schedule = Schedule()
    personalize: PersonalizeJob | None = None
    alerts: Alerts = Alerts()
    # Where the campaign was loaded from; not part of the file.
    root: Path = Field(default=Path("."), exclude=True)
    path: Path = Field(default=Path("."), exclude=True)

    @property
    def name(self) -> str:
        return self.campaign.name

    def resolve(self, template: str, edition: Edition | str) -> str:
        """Fill {root} and {edition} in an input path."""
        return template.replace("{root}", str(self.root)).replace("{edition}", str(edition))

    def input_path(self, key: str, edition: Edition | str) -> str:
        return self.resolve(getattr(self.inputs, key), edition)

    @property
    def template_dir(self) -> Path:
        return self.root / "templates" / self.campaign.template

    @property
    def rules_path(self) -> Path:
        return self.root / "rules" / f"{self.campaign.rules}.toml"


def project_root(root: str | os.PathLike[str] | None = None) -> Path:
    """--root, else $CALM_MAIL_ROOT, else the current directory."""
    return Path(root or os.environ.get("CALM_MAIL_ROOT") or ".").resolve()


def campaign_path(name: str, root: Path) -> Path:
    """The file of campaign `name` (a name under `root/campaigns`, or a path ending in .toml).

    Raises UsageError naming the known campaigns when there is no such file.
    """
    if name.endswith(".toml"):
        if not _exists(Path(name), name):
            raise UsageError(f"no campaign file {name!r}: it does not exist")
        return Path(name).resolve()
    path = root / "campaigns" / f"{name}.toml"
    if not _exists(path, name):
        known = list_campaigns(root)
        hint = f" Known campaigns: {', '.join(known)}." if known else " There are none there."
        # The folder, not the file: `name` is shown quoted, and may hold any character
        raise UsageError(f"no campaign {name!r}: no such file in {path.parent}.{hint}")
    return path


def _exists(path: Path, name: str) -> bool:
    """`path.exists()`, with UsageError when the OS refuses the name itself (too long)."""
    try:
        return path.exists()
    except OSError as exc:
        raise UsageError(f"no campaign {name!r}: {exc.strerror or exc}") from exc


# What a TOML user calls the Python type pydantic received.
_TOML_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    dict: "a table",
    list: "an array",
    date: "a date",
    time: "a time",
    datetime: "a date-time",
}


# pydantic's messages for the mistakes an editor makes most, in the file's own words.
_MESSAGES = {
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "string_type": "must be a string",
}
_PATTERNS = {
    _NAME.pattern: "lowercase letters, digits, '_' and '-' only, starting with a letter or digit",
    _EMAIL: "not an email address",
    _ARN: "must be an ARN (arn:...)",
    _S3_PREFIX: "must be an s3:// prefix ending in '/'",
    _FILE_NAME: "a file name: letters, digits, '_', '-' and '.', starting with a letter or digit",
    _LOCALE: "a locale such as en-US: letters, digits, '_' and '-'",
    r"^https://": "must start with https://",
    r"^https?://": "must start with https:// or http://",
}


def format_validation_error(path: Path | str, exc: ValidationError) -> list[str]:
    """pydantic's errors as `file: key.path: what is wrong` lines (`arms[1].weight`)."""
    return [f"{path}: {_key(err['loc'])}: {_message(err)}" for err in exc.errors()]


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key or "(top level)"


def _message(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (a typo?)"
    if err["type"] == "missing":
        return "required, but missing"
    if err["type"] == "too_short":
        return f"needs at least {err.get('ctx', {}).get('min_length')} item(s)"
    if err["type"] == "string_too_short":
        return f"needs at least {err.get('ctx', {}).get('min_length')} character(s)"
    if err["type"] == "string_too_long":
        return f"at most {err.get('ctx', {}).get('max_length')} character(s)"
    if err["type"] == "too_long":
        return f"at most {err.get('ctx', {}).get('max_length')} item(s)"
    if err["type"] == "string_pattern_mismatch":
        return _PATTERNS.get(str(err.get("ctx", {}).get("pattern")), err["msg"])
    message = _MESSAGES.get(err["type"]) or err["msg"].removeprefix("Value error, ")
    message = message.replace("Input should be", "must be", 1)
    if err["type"].endswith(("_type", "_parsing")):
        got = _TOML_TYPES.get(type(err["input"]), type(err["input"]).__name__)
        message += f" (got {got})"  # the type only: the value may be a secret (a webhook URL)
    return message


def read_toml(path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The TOML document at `path`; `error` naming the file (and line) when it is not one.

    For every config file (campaigns, rules, strings): covers bad syntax, bytes that are not
    UTF-8, absurd nesting, integers past Python's limit on digits and unreadable paths
    (missing, a folder, no permission, a name too long).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise error(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: TOMLDecodeError and huge ints
        raise error(f"{path}: {toml_problem(exc, text)}") from None


# Campaign fields set by the loader, never by the file.
_LOADER_KEYS = ("root", "path")


def load_campaign(name: str, root: str | os.PathLike[str] | None = None) -> Campaign:
    """Load and check a campaign by name (or path). Raises ConfigError listing every problem."""
    base = project_root(root)
    path = campaign_path(name, base)
    return parse_campaign(read_toml(path), path=path, root=base)


def parse_campaign(data: dict[str, Any], *, path: Path, root: Path) -> Campaign:
    """Check a campaign's TOML table. Raises one ConfigError with every problem, each line
    starting with `path`."""
    problems = [f"{path}: {key}: unknown key (a typo?)" for key in _LOADER_KEYS if key in data]
    try:
        campaign = Campaign.model_validate({**data, "root": root, "path": path})
    except ValidationError as exc:
        problems += format_validation_error(path, exc)
    if problems:
        raise ConfigError(problems)
    return campaign


def list_campaigns(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the campaigns under `root/campaigns`, sorted."""
    return sorted(p.stem for p in (project_root(root) / "campaigns").glob("*.toml"))
