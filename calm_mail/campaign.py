"""The campaign model: one TOML per campaign under ``campaigns/``, loaded into frozen models.

pydantic does the checking because it reports every problem at once with its key path, which
is what an editor needs: ``campaigns/x.toml: experiment.arms.1.weight: must be > 0``.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from calm_mail.edition import Edition
from calm_mail.errors import ConfigError, UsageError
from calm_mail.records import ContentSource

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Inputs(_Model):
    """Where the edition's inputs live. Paths or s3:// URIs with {root} and {edition}."""

    catalog: str
    audience: str
    recommendations: str  # a prefix (folder) holding Personalize *.out part files
    editorial: str
    history: str
    max_bad_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_age_days: Annotated[int, Field(ge=1)] = 7


class Audience(_Model):
    locales: tuple[str, ...]
    subscription_statuses: tuple[str, ...] = ("subscriber", "trial", "free")
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

    @model_validator(mode="after")
    def _check_arms(self) -> Experiment:
        names = [arm.name for arm in self.arms]
        if len(self.arms) < 1:
            raise ValueError("needs at least one arm")
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {names}")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not an arm ({', '.join(names)})")
        return self

    @property
    def control_arm(self) -> str:
        return self.control or self.arms[0].name

    @property
    def weights(self) -> dict[str, float]:
        total = sum(arm.weight for arm in self.arms)
        return {arm.name: arm.weight / total for arm in self.arms}


class Content(_Model):
    min_items: Annotated[int, Field(ge=1)] = 3
    max_items: Annotated[int, Field(ge=1, le=20)] = 6
    popular_days: Annotated[int, Field(ge=1)] = 28

    @model_validator(mode="after")
    def _check_range(self) -> Content:
        if self.min_items > self.max_items:
            raise ValueError(f"min_items ({self.min_items}) exceeds max_items ({self.max_items})")
        return self


class Sender(_Model):
    from_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
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
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class PersonalizeJob(_Model):
    """The optional Personalize batch inference step (calm_mail.ops.personalize_job).

    Prefixes take {root} and {edition}, must be s3:// and end in '/'. The output prefix
    defaults to `inputs.recommendations`, where the planner reads the edition's output.
    """

    enabled: bool = True
    solution_version_arn: Annotated[str, Field(pattern=r"^arn:")]
    role_arn: Annotated[str, Field(pattern=r"^arn:")]
    filter_arn: Annotated[str | None, Field(pattern=r"^arn:")] = None
    filter_values: dict[str, str] = Field(default_factory=dict)
    num_results: Annotated[int, Field(ge=1, le=500)] = 25
    input_prefix: Annotated[str, Field(pattern=r"^s3://.+/$")]
    output_prefix: Annotated[str | None, Field(pattern=r"^s3://.+/$")] = None
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
    if name.endswith(".toml") and Path(name).exists():
        return Path(name).resolve()
    path = root / "campaigns" / f"{name}.toml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "campaigns").glob("*.toml"))
        hint = f" Known campaigns: {', '.join(known)}." if known else ""
        raise UsageError(f"no campaign {name!r}: {path} does not exist.{hint}")
    return path


def format_validation_error(path: Path | str, exc: ValidationError) -> list[str]:
    """pydantic's errors as `file: key.path: what is wrong` lines."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{path}: {key}: {message}")
    return problems


def read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def load_campaign(name: str, root: str | os.PathLike[str] | None = None) -> Campaign:
    """Load and check a campaign by name (or path). Raises ConfigError listing every problem."""
    base = project_root(root)
    path = campaign_path(name, base)
    data = read_toml(path)
    try:
        return Campaign.model_validate({**data, "root": base, "path": path})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def list_campaigns(root: str | os.PathLike[str] | None = None) -> list[str]:
    return sorted(p.stem for p in (project_root(root) / "campaigns").glob("*.toml"))
