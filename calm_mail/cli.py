"""The command line: the product's face.

Commands are looked up lazily by name (click's LazyGroup pattern) so `calm-mail --help` stays
fast and each stage owns its command module. Every CalmMailError is turned into one clear
paragraph and its exit code here, in one place; the codes and their meanings are
`errors.ExitCode` (`calm-mail --help` lists them).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import sys
from typing import Any

import click

from calm_mail.errors import CalmMailError, ExitCode, exit_code_table

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "demo": "calm_mail.commands.demo:demo",
    "data": "calm_mail.commands.data:data",
    "validate": "calm_mail.commands.edition:validate",
    "plan": "calm_mail.commands.edition:plan",
    "preview": "calm_mail.commands.preview:preview",
    "run": "calm_mail.commands.edition:run",
    "status": "calm_mail.commands.status:status",
    "cancel": "calm_mail.commands.status:cancel",
    "history": "calm_mail.commands.status:history",
    "events": "calm_mail.commands.events:events",
    "completions": "calm_mail.commands.events:completions",
    "suppressions": "calm_mail.commands.suppressions:suppressions",
    "report": "calm_mail.commands.report:report",
    "schedule": "calm_mail.commands.schedule:schedule",
    "sandbox": "calm_mail.commands.sandbox:sandbox",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("calm_mail"):
                return _unavailable(cmd_name)
            return _unavailable(cmd_name, needs_extra(exc))
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else _unavailable(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CalmMailError as exc:
            fail(ctx, str(exc), exc.exit_code)
        except ModuleNotFoundError as exc:  # the demo without the sandbox extra
            if not exc.name or exc.name.startswith("calm_mail"):
                raise
            fail(ctx, needs_extra(exc), ExitCode.MISTAKE)
        except OSError as exc:
            # A path the user gave that cannot be used (an outbox under /proc, an unwritable
            # folder, a name too long): their mistake, not a bug, even when a stage did not
            # wrap it. Any other OSError is not theirs and keeps its traceback.
            if not is_path_mistake(exc):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            fail(ctx, f"{where}{exc.strerror or exc}", ExitCode.MISTAKE)


# errno values that say the path itself is unusable, whatever the command.
PATH_MISTAKES = frozenset(
    {
        errno.ENOENT,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EROFS,
        errno.EEXIST,
    }
)


def is_path_mistake(exc: OSError) -> bool:
    """Whether `exc` is about a path the user named (not a disk, socket or system failure)."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return True
    return isinstance(exc, PermissionError) or (
        exc.filename is not None and exc.errno in PATH_MISTAKES
    )


def fail(ctx: click.Context, message: str, code: int) -> None:
    """Print `message` as one paragraph, secrets removed, and exit with `code`."""
    click.echo(f"calm-mail: {redact(message)}", err=True)
    ctx.exit(code)


# Environment variables whose values are secrets, wherever they might be echoed.
SECRET_ENV = ("SENDGRID_API_KEY", "CALM_MAIL_SLACK_WEBHOOK_URL")
_URL_PASSWORD = re.compile(r"(?<=://)([^/:@\s]*):[^/@\s]+@")


def redact(text: str) -> str:
    """`text` without the values of SECRET_ENV or passwords in URLs (user:pw@host)."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:  # an empty or one-letter "secret" would blank out everything
            text = text.replace(value, "***")
    return _URL_PASSWORD.sub(r"\1:***@", text)


class _RedactSecrets(logging.Filter):
    """Keeps secrets out of every log line, whichever library wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: the handler reports that itself
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def needs_extra(exc: ModuleNotFoundError) -> str:
    """The message for a command that imports a package the runtime does not install."""
    extra = "pip install 'calm-mail[sandbox]'"
    return f"this needs {exc.name}, which the sandbox extra installs: {extra}"


def _unavailable(name: str, why: str = "") -> click.Command:
    short = "(needs the sandbox extra)" if why else "(not available in this build)"

    # Whatever options were given, the answer is why the command is missing.
    settings = {"ignore_unknown_options": True, "allow_extra_args": True}

    @click.command(name, short_help=short, help=why or short, context_settings=settings)
    def missing() -> None:
        raise click.UsageError(why or f"'{name}' is not available in this build")

    return missing


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExit codes:\n" + "\n".join(f"  {line}" for line in exit_code_table()),
)
@click.option(
    "--root",
    envvar="CALM_MAIL_ROOT",
    type=click.Path(file_okay=False),
    help="Project folder holding campaigns/, templates/, rules/ (default: .).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="calm-mail")
@click.pass_context
def main(ctx: click.Context, root: str | None, verbose: int) -> None:
    """Build, send and measure the Weekly Winddown email."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactSecrets())
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[handler]
    )
    ctx.ensure_object(dict)
    ctx.obj["root"] = root


if __name__ == "__main__":  # pragma: no cover
    main()
