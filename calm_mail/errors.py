"""One error tree, grouped by what the caller should do.

Exit codes are listed in one place (`ExitCode`) and each error carries its own (`exit_code`):
2 for a user's mistake (usage, configuration, input), 1 for a job that failed, 3 when another
process holds the edition's lock. Leaf errors also inherit the stdlib type they resemble, carry
context, and are chained with ``raise ... from``. Messages never contain secrets.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code of `calm-mail`, in one place (the README's table lists the same)."""

    DONE = 0
    FAILED = 1
    MISTAKE = 2
    BUSY = 3

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.DONE: "done: what the command was asked to do is done",
    ExitCode.FAILED: "the job failed, or stopped with mail left to send",
    ExitCode.MISTAKE: "bad usage, config or input: one message names the file, line or key",
    ExitCode.BUSY: "another process holds the edition's lock: nothing done, try later",
}


def exit_code_table() -> list[str]:
    """One line per exit code, `N  meaning`, for `calm-mail --help` and the README."""
    return [f"{int(code)}  {code.meaning}" for code in ExitCode]


class CalmMailError(Exception):
    """Base of every error calm-mail raises on purpose."""

    exit_code: int = ExitCode.FAILED


class UsageError(CalmMailError, ValueError):
    """The command line was wrong (unknown campaign, bad edition key, missing option)."""

    exit_code = ExitCode.MISTAKE


class ConfigError(CalmMailError, ValueError):
    """A campaign, rules or template file is wrong. Lists every problem at once."""

    exit_code = ExitCode.MISTAKE

    def __init__(self, problems: Iterable[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RuleError(ConfigError):
    """A rule set names an unknown step or gives a step a bad parameter."""


class InputError(CalmMailError, ValueError):
    """An input file is unreadable, lacks a required column, or has too many bad rows."""

    exit_code = ExitCode.MISTAKE

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if path and line is not None else path
        super().__init__(f"{where}: {message}" if where else message)


class RenderError(CalmMailError):
    """A template failed to compile or render."""

    exit_code = ExitCode.MISTAKE


class PreflightError(CalmMailError):
    """A pre-flight check failed; nothing was sent. `report` is the stored pre-flight report."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, report: Mapping[str, object] | None = None) -> None:
        self.report = report
        super().__init__(message)


class DeliveryError(CalmMailError):
    """Sending failed. `retriable` says whether trying again may help."""

    retriable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RetriableDeliveryError(DeliveryError):
    """429, 5xx, timeouts and dropped connections: back off and try again."""

    retriable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class FatalDeliveryError(DeliveryError):
    """401/403 and the like: stop the whole run, every later send would fail too."""


class RecipientRejected(DeliveryError):
    """A 4xx that concerns this one message only (bad address, too large): skip it."""


class WebhookError(CalmMailError, ValueError):
    """An Event Webhook request is malformed or its signature or credentials are wrong."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class LockHeld(CalmMailError):
    """Another process holds the edition's lock. Exit 3: try again later, nothing is wrong."""

    exit_code = ExitCode.BUSY


_LONG_DIGITS = re.compile(r"[0-9][0-9_]{100,}")


def toml_problem(exc: ValueError | RecursionError, text: str) -> str:
    """What is wrong with the TOML `text` that `tomllib.loads` refused with `exc`: its own
    message (which ends in "(at line L, column C)"), or, for the errors it does not place (an
    integer past Python's limit on digits, absurd nesting), the same with the line found here.
    """
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"not valid TOML: {exc}"
    if isinstance(exc, RecursionError):
        return "not valid TOML: arrays or tables nested too deep"
    limit = sys.get_int_max_str_digits()
    where = ""
    for match in _LONG_DIGITS.finditer(text):
        if len(match.group().replace("_", "")) > limit:
            where = f" (at line {text.count(chr(10), 0, match.start()) + 1})"
            break
    if where:
        return f"not valid TOML: an integer of more than {limit} digits{where}"
    return f"not valid TOML: {exc}"
