"""The campaign model: one TOML per campaign under ``campaigns/``, loaded into frozen models.

pydantic does the checking because it reports every problem at once with its key path, which
is what an editor needs: ``campaigns/x.toml: experiment.arms[1].weight: must be greater than 0``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
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
from calm_mail.errors import ConfigError, UsageError
from calm_mail.records import ContentSource

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_ARN = r"^arn:"
_S3_PREFIX = r"^s3://.+/$"


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


_InputPath = Annotated[str, Field(min_length=1), AfterValidator(_check_placeholders)]


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
    max_age_days: Annotated[int, Field(ge=1)] = 7


class Audience(_Model):
    locales: Annotated[tuple[str, ...], Field(min_length=1)]
    subscription_statuses: Annotated[tuple[str, ...], Field(min_length=1)] = (
        "subscriber",
        "trial",
        "free",
    )
    active_within_days: Annotated[int, Field(ge=1)] = 90
    min_days_between_editions: Annotated[int, Field(ge=0)] = 6


class Arm(_Model):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    weight: Annotated[float, Field(gt=0)]
    source: ContentSource


class Experiment(_Model):
    name: Annotated[str, Field(min_length=1)]
    seed: Annotated[str, Field(min_length=1)]
    arms: tuple[Arm, ...]
    control: str | None = None  # defaults to the first arm
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
    min_items: Annotated[int, Field(ge=1)] = 3
    max_items: Annotated[int, Field(ge=1, le=20)] = 6
    popular_days: Annotated[int, Field(ge=1)] = 28

    @model_validator(mode="after")
    def _check_range(self) -> Content:
        if self.min_items > self.max_items:
            message = f"{self.min_items} exceeds max_items ({self.max_items})"
            problem = _problem(("min_items",), message, self.min_items)
            raise ValidationError.from_exception_data(type(self).__name__, [problem])
        return self


class Sender(_Model):
    from_email: Annotated[str, Field(pattern=_EMAIL)]
    from_name: str
    reply_to: str | None = None
    categories: tuple[str, ...] = ()
    unsubscribe_group: int | None = None
    postal_address: Annotated[str, Field(min_length=10)]
    unsubscribe_url: Annotated[str, Field(pattern=r"^https://")]  # {token} is replaced
    unsubscribe_mailto: str | None = None
    preferences_url: str | None = None
    list_unsubscribe: Literal["headers", "sendgrid"] = "headers"
    app_link_base: str = "https://calm.example/app"

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
        if any(len(c) > 255 or not c.isascii() for c in value):
            raise ValueError("each category is ASCII, at most 255 characters")
        return value


class Schedule(_Model):
    weekday: Literal["saturday", "sunday"] = "saturday"
    local_time: time = time(8, 0)
    use_preferred_hour: bool = False
    fallback_timezone: str = "America/New_York"
    prepare: str = "fri 18:00"  # when the scheduler prepares and sends the edition (UTC)
    max_rate: Annotated[float, Field(gt=0)] = 500.0  # sends per second
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
    solution_version_arn: Annotated[str, Field(pattern=_ARN)]
    role_arn: Annotated[str, Field(pattern=_ARN)]
    filter_arn: Annotated[str | None, Field(pattern=_ARN)] = None
    filter_values: dict[str, str] = Field(default_factory=dict)
    num_results: Annotated[int, Field(ge=1, le=500)] = 25
    input_prefix: Annotated[str, Field(pattern=_S3_PREFIX)]
    output_prefix: Annotated[str | None, Field(pattern=_S3_PREFIX)] = None
    poll_interval_s: Annotated[float, Field(gt=0)] = 60.0
    timeout_s: Annotated[float, Field(gt=0)] = 3 * 3600.0


class Alerts(_Model):
    """Where run summaries and failure alerts go besides the log (calm_mail.ops.alerts).

    Prefer the environment variable named by `slack_webhook_env`: the URL is a secret.
    """

    slack_webhook_url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    slack_webhook_env: str = "CALM_MAIL_SLACK_WEBHOOK_URL"
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0


class CampaignSection(_Model):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    title: str
    template: str
    rules: str


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
        if not Path(name).exists():
            raise UsageError(f"no campaign file {name!r}: it does not exist")
        return Path(name).resolve()
    path = root / "campaigns" / f"{name}.toml"
    if not path.exists():
        known = list_campaigns(root)
        hint = f" Known campaigns: {', '.join(known)}." if known else " There are none there."
        # The folder, not the file: `name` is shown quoted, and may hold any character
        raise UsageError(f"no campaign {name!r}: no such file in {path.parent}.{hint}")
    return path


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
    UTF-8, absurd nesting and unreadable paths (missing, a folder, no permission).
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:  # its message ends in "(at line L, column C)"
        raise error(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except RecursionError:
        raise error(f"{path}: not valid TOML: arrays or tables nested too deep") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc


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
