"""The command line: every user mistake is exit 2 and one clear paragraph, never a traceback;
every command has help; no command prints an API key."""

from __future__ import annotations

import copy
import csv
import logging
import re
import shutil
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from calm_mail import cli, errors
from calm_mail.cli import main, redact
from calm_mail.demo.data import generate
from calm_mail.edition import Edition

REPO = Path(__file__).resolve().parents[1]
EDITION = Edition.upcoming().key  # `run`'s pre-flight wants send times within SendGrid's 72 h
SECRET = "SG.secret-should-not-leak"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set for EDITION, shared read-only by this module's tests."""
    data = tmp_path_factory.mktemp("cli-data") / "demo"
    generate(data, users=300, seed=1, edition=EDITION)
    return data


def make_root(tmp_path: Path, data: Path | None = None, *, copy_data: bool = False) -> Path:
    """A project folder with the repo's campaigns, rules and templates, and `data` (linked, or
    copied when the test will break it) where the shipped campaigns look for it."""
    root = tmp_path / "project"
    for folder in ("campaigns", "rules", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    if data is not None:
        (root / "data").mkdir()
        if copy_data:
            shutil.copytree(data, root / "data" / "demo")
        else:
            (root / "data" / "demo").symlink_to(data, target_is_directory=True)
    return root


@pytest.fixture
def root(tmp_path: Path, demo_data: Path) -> Path:
    return make_root(tmp_path, demo_data)


@pytest.fixture
def broken_root(tmp_path: Path, demo_data: Path) -> Path:
    """Like `root`, with a private copy of the data to break."""
    return make_root(tmp_path, demo_data, copy_data=True)


def invoke(root: Path, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    runner = CliRunner(
        env={
            "CALM_MAIL_DATABASE_URL": f"sqlite:///{root / 'ledger.db'}",
            "CALM_MAIL_ROOT": None,
            "SENDGRID_API_KEY": None,
            "SENDGRID_API_HOST": None,
            **(env or {}),
        }
    )
    return runner.invoke(main, ["--root", str(root), *args])


def mistake(result: Result) -> str:
    """Assert `result` is a user mistake reported well; return its message."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{result.output}\nraised {result.exception!r}") from result.exception
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    output = result.stderr.strip()  # stdout may hold progress ("ok  catalog: ...") first
    if output.startswith("Usage:"):  # click's own usage error: usage, blank line, the error
        output = output.split("\n\n")[-1]
        assert output.startswith("Error: "), output
    else:
        assert output.startswith("calm-mail: "), output
    assert "\n\n" not in output, output  # one paragraph
    return output


def ok(result: Result) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{result.output}\nraised {result.exception!r}") from result.exception
    assert result.exit_code == 0, result.output
    return result.output


# ----------------------------------------------------------------------------- help


def _readme_commands() -> list[tuple[str, str | None]]:
    """(command, subcommand) of every line of the README's command block."""
    found = []
    for line in (REPO / "README.md").read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "calm-mail":
            sub = words[2] if len(words) > 2 and re.fullmatch(r"[a-z]+", words[2]) else None
            found.append((words[1], sub))
    return found


def test_readme_lists_the_design_commands() -> None:
    tops = {top for top, _ in _readme_commands()}
    design = {"demo", "data", "validate", "plan", "preview", "run", "status", "cancel"}
    design |= {"events", "completions", "report", "schedule", "sandbox"}
    assert design <= tops


def test_main_help_lists_every_command(tmp_path: Path) -> None:
    output = ok(invoke(tmp_path, "--help"))
    listed = set(re.findall(r"^  ([a-z]+)\b", output.split("Commands:")[1], re.MULTILINE))
    assert {top for top, _ in _readme_commands()} <= listed
    assert set(cli.COMMANDS) == listed


@pytest.mark.parametrize(("top", "sub"), sorted(set(_readme_commands()), key=str))
def test_readme_commands_exist(tmp_path: Path, top: str, sub: str | None) -> None:
    output = ok(invoke(tmp_path, top, *([sub] if sub else []), "--help"))
    assert output.startswith("Usage: ")
    assert "not available in this build" not in output


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(tmp_path: Path, name: str) -> None:
    output = ok(invoke(tmp_path, name, "--help"))
    assert output.startswith("Usage: ")
    command = main.get_command(click.Context(main), name)
    assert command is not None and "not available" not in (command.help or "")
    if isinstance(command, click.Group):
        for sub in command.list_commands(click.Context(command)):
            assert ok(invoke(tmp_path, name, sub, "--help")).startswith("Usage: ")


# ----------------------------------------------------------------------------- campaign mistakes


def test_unknown_campaign_lists_known_ones(root: Path) -> None:
    for command in ("validate", "plan", "run", "status", "history"):
        message = mistake(invoke(root, command, "weekly_windown"))
        assert "no campaign 'weekly_windown'" in message
        assert "weekly_winddown" in message and "winddown_abc" in message


def test_broken_campaign_file_names_file_and_line(root: Path) -> None:
    path = root / "campaigns" / "weekly_winddown.toml"
    lines = path.read_text().splitlines()
    lines[6] = 'title = "Weekly Winddown'  # an unclosed string on line 7
    path.write_text("\n".join(lines))
    message = mistake(invoke(root, "plan", "weekly_winddown", "--edition", EDITION))
    assert f"{path}: not valid TOML" in message
    assert "line 7" in message


def test_campaign_mistakes_are_listed_by_key(root: Path) -> None:
    path = root / "campaigns" / "weekly_winddown.toml"
    text = path.read_text().replace("weight = 50", "weight = 0").replace("max_items = 6", "")
    text = text.replace('fallback_timezone = "America/New_York"', 'fallback_timezone = "America"')
    path.write_text(text.replace("[sender]", "[sender]\nfrom_mail = 'x@calm.example'"))
    message = mistake(invoke(root, "validate", "weekly_winddown"))
    lines = message.removeprefix("calm-mail: ").splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert f"{path}: experiment.arms[0].weight: must be greater than 0" in lines
    assert f"{path}: experiment.arms[1].weight: must be greater than 0" in lines
    assert f"{path}: sender.from_mail: unknown key (a typo?)" in lines
    assert f"{path}: schedule.fallback_timezone: unknown time zone 'America'" in lines
    assert len(lines) == 4


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "campaign: required, but missing"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
        (b"[campaign]\nname = 'weekly_winddown'\n[campaign]\n", "not valid TOML"),
    ],
    ids=["empty", "binary", "table twice"],
)
def test_unusable_campaign_files(root: Path, content: bytes, expected: str) -> None:
    (root / "campaigns" / "weekly_winddown.toml").write_bytes(content)
    assert expected in mistake(invoke(root, "plan", "weekly_winddown", "--edition", EDITION))


def test_campaign_file_that_is_a_folder(root: Path) -> None:
    (root / "campaigns" / "folder.toml").mkdir()
    assert "cannot read" in mistake(invoke(root, "validate", "folder"))


_JUNK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_JUNK
@given(name=st.text(min_size=1, max_size=30).filter(lambda n: not n.startswith("-")))
@example(name="\n\n")  # the message once printed the name raw inside the file's path
@example(name="x\n\n.toml")
def test_junk_campaign_names(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    root = tmp_path_factory.mktemp("names")
    (root / "campaigns").mkdir()
    message = mistake(invoke(root, "history", name))
    assert "no campaign" in message


@_JUNK
@given(edition=st.text(max_size=12).filter(lambda e: not e.startswith("-")))
def test_junk_editions(tmp_path_factory: pytest.TempPathFactory, edition: str) -> None:
    assume(not re.fullmatch(r"\s*[0-9]{4}-[wW][0-9]{2}\s*", edition))
    root = tmp_path_factory.mktemp("editions")
    message = mistake(invoke(root, "status", "weekly_winddown", "--edition", edition))
    assert "--edition" in message


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("edition", ["2026-W54", "2026-W00", "2027-W53", "next week", "2026W48"])
@pytest.mark.parametrize("command", ["validate", "plan", "run", "status", "cancel", "report"])
def test_bad_edition(root: Path, command: str, edition: str) -> None:
    message = mistake(invoke(root, command, "weekly_winddown", "--edition", edition))
    assert repr(edition) in message and "ISO week" in message


def test_run_without_api_key(root: Path) -> None:
    message = mistake(invoke(root, "run", "weekly_winddown", "--edition", EDITION))
    assert "SENDGRID_API_KEY" in message and "--dry-run" in message


def test_outbox_without_dry_run(root: Path, tmp_path: Path) -> None:
    args = ["run", "weekly_winddown", "--edition", EDITION, "--outbox", str(tmp_path / "o")]
    assert "--outbox goes with --dry-run" in mistake(invoke(root, *args))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("shard", ["x", "1", "5/3", "3/3", "-1/4", "0/0", "0/3", "1/2/3", "a/b"])
def test_bad_shard(root: Path, shard: str) -> None:
    args = ["run", "weekly_winddown", "--edition", EDITION, "--dry-run", "--shard", shard]
    assert f"--shard {shard!r}" in mistake(invoke(root, *args))


def test_outbox_that_cannot_be_made(root: Path) -> None:
    inside_a_file = root / "campaigns" / "weekly_winddown.toml" / "outbox"
    args = ["run", "weekly_winddown", "--edition", EDITION, "--dry-run"]
    message = mistake(invoke(root, *args, "--outbox", str(inside_a_file)))
    assert "weekly_winddown.toml" in message


def test_report_needs_edition_or_experiment(root: Path) -> None:
    message = mistake(invoke(root, "report", "weekly_winddown"))
    assert "--edition" in message and "--experiment" in message


# ----------------------------------------------------------------------------- inputs


def test_plan_names_the_missing_input(tmp_path: Path) -> None:
    root = make_root(tmp_path)  # no data at all
    message = mistake(invoke(root, "plan", "weekly_winddown", "--edition", EDITION))
    assert str(root / "data" / "demo" / "catalog.csv") in message


def test_validate_names_every_missing_input(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    message = mistake(invoke(root, "validate", "weekly_winddown", "--edition", EDITION))
    demo = root / "data" / "demo"
    for missing in (
        demo / "catalog.csv",
        demo / "users.csv",
        demo / "personalize" / EDITION,
        demo / "editorial" / f"{EDITION}.toml",
    ):
        assert str(missing) in message, missing


def test_validate_a_good_data_set(root: Path) -> None:
    output = ok(invoke(root, "validate", "weekly_winddown", "--edition", EDITION))
    assert f"weekly_winddown {EDITION}: valid" in output


def test_validate_lists_every_problem_at_once(broken_root: Path) -> None:
    demo = broken_root / "data" / "demo"
    shutil.rmtree(demo / "personalize" / EDITION)
    (demo / "editorial" / f"{EDITION}.toml").write_text("edition = [")
    rules = broken_root / "rules" / "weekly_winddown.toml"
    rules.write_text(rules.read_text() + '\n[[steps]]\nname = "telepathy"\n')
    (broken_root / "templates" / "weekly_winddown" / "layout.mjml").unlink()
    message = mistake(invoke(broken_root, "validate", "weekly_winddown", "--edition", EDITION))
    assert "4 problem(s)" in message
    assert f"personalize/{EDITION}" in message
    assert f"editorial/{EDITION}.toml: not valid TOML" in message
    assert "unknown step 'telepathy'" in message
    assert "layout.mjml" in message


BREAKAGES: dict[str, Callable[[Path], object]] = {
    "catalog is a folder": lambda demo: _replace_with_folder(demo / "catalog.csv"),
    "audience is a folder": lambda demo: _replace_with_folder(demo / "users.csv"),
    "empty catalog": lambda demo: (demo / "catalog.csv").write_text(""),
    "empty audience": lambda demo: (demo / "users.csv").write_text(""),
    "binary catalog": lambda demo: (demo / "catalog.csv").write_bytes(b"\xff\xfe\x00\x01" * 50),
    "audience without a column": lambda demo: _drop_column(demo / "users.csv", "EMAIL"),
    "editorial is empty": lambda demo: (demo / "editorial" / f"{EDITION}.toml").write_text(""),
}


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _drop_column(path: Path, column: str) -> None:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    index = rows[0].index(column)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(row[:index] + row[index + 1 :] for row in rows)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_broken_inputs_are_exit_2(broken_root: Path, command: str, breakage: str) -> None:
    BREAKAGES[breakage](broken_root / "data" / "demo")
    message = mistake(invoke(broken_root, command, "weekly_winddown", "--edition", EDITION))
    assert str(broken_root / "data" / "demo") in message


# ----------------------------------------------------------------------------- secrets


def test_run_never_prints_the_api_key(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"SENDGRID_API_KEY": SECRET, "SENDGRID_API_HOST": "http://127.0.0.1:9"}
    result = invoke(root, "-vv", "run", "weekly_winddown", "--edition", EDITION, env=env)
    assert result.exit_code == 1, result.output  # nobody listens on port 9: the job fails
    assert "127.0.0.1:9" in result.output  # ... and says where it tried
    assert "Traceback" not in result.output
    assert caplog.records, "-vv logs something"
    status = invoke(root, "status", "weekly_winddown", "--edition", EDITION, env=env)
    for text in (result.output, caplog.text, status.output):
        assert SECRET not in text
        assert "secret-should-not-leak" not in text


def test_redact_removes_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", SECRET)
    text = f"auth {SECRET} to postgresql://calm:hunter2@127.0.0.1/db and sqlite:///x.db"
    cleaned = redact(text)
    assert SECRET not in cleaned and "hunter2" not in cleaned
    assert "postgresql://calm:***@127.0.0.1/db" in cleaned and "sqlite:///x.db" in cleaned
    monkeypatch.setenv("SENDGRID_API_KEY", "")
    assert redact("nothing to hide") == "nothing to hide"


def test_log_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", SECRET)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (SECRET,), None)
    assert cli._RedactSecrets().filter(record)
    assert record.getMessage() == "key=***"


# ----------------------------------------------------------------------------- exit codes


@click.command()
@click.argument("kind")
def raiser(kind: str) -> None:
    """Raises the error named KIND (registered as a command by the test below)."""
    raise RAISED[kind]


RAISED: dict[str, BaseException] = {
    "usage": errors.UsageError("no such thing"),
    "config": errors.ConfigError(["a.toml: x: bad", "a.toml: y: bad"]),
    "rule": errors.RuleError("rules/x.toml: step 1: bad"),
    "input": errors.InputError("bad row", path="users.csv", line=7),
    "render": errors.RenderError("layout.mjml:3: bad tag"),
    "preflight": errors.PreflightError("pre-flight failed"),
    "delivery": errors.FatalDeliveryError("401 from SendGrid", status=401),
    "lock": errors.LockHeld("another run holds the lock"),
    "missing": FileNotFoundError(2, "No such file or directory", "/no/such/outbox"),
    "folder": IsADirectoryError(21, "Is a directory", "/tmp"),
    "secret": errors.ConfigError(f"auth {SECRET} refused"),
}
EXIT_CODES = {"preflight": 1, "delivery": 1, "lock": 3}


@pytest.mark.parametrize("kind", sorted(RAISED))
def test_errors_become_exit_codes_and_one_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "raiser", "tests.test_cli:raiser")
    result = invoke(tmp_path, "raiser", kind, env={"SENDGRID_API_KEY": SECRET})
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == EXIT_CODES.get(kind, 2)
    message = result.stderr.strip()
    assert message.startswith("calm-mail: ") and "\n\n" not in message
    assert str(RAISED[kind]).split("\n")[0] in message or kind in ("missing", "folder", "secret")
    assert SECRET not in result.output


def test_path_errors_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "raiser", "tests.test_cli:raiser")
    message = invoke(tmp_path, "raiser", "missing").stderr.strip()
    assert message == "calm-mail: /no/such/outbox: No such file or directory"


def test_input_error_places() -> None:
    assert str(errors.InputError("bad", path="a.csv", line=3)) == "a.csv:3: bad"
    assert str(errors.InputError("bad", path="a.csv")) == "a.csv: bad"
    assert str(errors.InputError("bad", line=3)) == "bad"


# ----------------------------------------------------------------------------- once gaps
# User mistakes that used to end in a traceback in other stages' code; fixed there.


def test_binary_rules_file(root: Path) -> None:
    (root / "rules" / "weekly_winddown.toml").write_bytes(b"\xff\xfe\x00\x01")
    mistake(invoke(root, "plan", "weekly_winddown", "--edition", EDITION))


@pytest.mark.parametrize("url", ["junk", "foo://x", "sqlite:///{root}/campaigns/x.toml/l.db"])
def test_bad_database_url(root: Path, url: str) -> None:
    (root / "campaigns" / "x.toml").write_text("")
    env = {"CALM_MAIL_DATABASE_URL": url.format(root=root)}
    mistake(invoke(root, "history", "weekly_winddown", env=env))


def test_bad_database_url_hides_the_password(root: Path) -> None:
    env = {"CALM_MAIL_DATABASE_URL": "postgresql://calm:hunter2@127.0.0.1:9/nowhere"}
    result = invoke(root, "history", "weekly_winddown", env=env)
    mistake(result)
    assert "hunter2" not in result.output


def test_sandbox_port_out_of_range(tmp_path: Path) -> None:
    mistake(invoke(tmp_path, "sandbox", "--port", "99999"))


def test_validate_names_recommended_ids_the_catalog_lacks(broken_root: Path) -> None:
    demo = broken_root / "data" / "demo"
    first = (demo / "personalize" / EDITION / "part-00000.json.out").read_bytes().splitlines()[0]
    picked = (demo / "editorial" / f"{EDITION}.toml").read_text()
    retired = next(i for i in orjson.loads(first)["output"]["recommendedItems"] if i not in picked)
    catalog = demo / "catalog.csv"
    rows = catalog.read_text().splitlines(keepends=True)
    catalog.write_text("".join(r for r in rows if not r.startswith(f"{retired},")))
    output = " ".join(
        ok(invoke(broken_root, "validate", "weekly_winddown", "--edition", EDITION)).split()
    )
    assert "are not in the catalog: 1 distinct id(s), most often " + retired in output
    assert "retired content? they will be dropped" in output
    campaign = broken_root / "campaigns" / "weekly_winddown.toml"
    text = campaign.read_text().replace(
        "max_unknown_item_share = 0.1", "max_unknown_item_share = 0"
    )
    campaign.write_text(text)
    message = mistake(invoke(broken_root, "validate", "weekly_winddown", "--edition", EDITION))
    assert "inputs.max_unknown_item_share" in " ".join(message.split()) and retired in message


# ----------------------------------------------------------------------------- issue 16
# Junk configuration and command lines that once ended in a traceback or a hang.


def edit_campaign(root: Path, old: str, new: str) -> Path:
    path = root / "campaigns" / "weekly_winddown.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("active_within_days = 90", "active_within_days = 3000000", "audience.active_within_days"),
        ("popular_days = 28", "popular_days = 3000000", "content.popular_days"),
        ("max_age_days = 7", "max_age_days = 10000000000", "inputs.max_age_days"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_huge_day_counts_are_refused_by_key(
    root: Path, command: str, old: str, new: str, key: str
) -> None:
    path = edit_campaign(root, old, new)
    message = mistake(invoke(root, command, "weekly_winddown", "--edition", EDITION))
    assert f"{path}: {key}: must be less than or equal to 3650" in message


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_an_integer_of_5000_digits_names_file_and_line(root: Path, command: str) -> None:
    path = edit_campaign(root, "popular_days = 28", "popular_days = " + "9" * 5000)
    args = [command, "weekly_winddown", "--edition", EDITION, "--dry-run"][: 4 + (command == "run")]
    message = mistake(invoke(root, *args))
    assert f"{path}: not valid TOML: an integer of more than 4300 digits (at line" in message


def test_an_editorial_list_with_a_huge_integer_names_the_file(broken_root: Path) -> None:
    picks = broken_root / "data" / "demo" / "editorial" / f"{EDITION}.toml"
    picks.write_text(picks.read_text() + "\nx = " + "7" * 4400 + "\n")
    message = mistake(invoke(broken_root, "plan", "weekly_winddown", "--edition", EDITION))
    assert f"{picks}: not valid TOML: an integer of more than 4300 digits" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("personalize/{edition}/", "personalize/" + "x" * 300 + "/", "inputs.recommendations"),
        ('"en-US",', '"' + "x" * 300 + '",', "audience.locales[0]"),
        ('"en-US",', '"en-US/../../x",', "audience.locales[0]"),
    ],
    ids=["recommendations", "long locale", "locale with a slash"],
)
@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_path_too_long_names_its_key(
    root: Path, command: str, old: str, new: str, key: str
) -> None:
    path = edit_campaign(root, old, new)
    args = [command, "weekly_winddown", "--edition", EDITION, "--dry-run"][: 4 + (command == "run")]
    message = mistake(invoke(root, *args))
    assert f"{path}: {key}: " in message


def test_a_reply_to_of_300000_characters_is_refused(root: Path) -> None:
    path = edit_campaign(root, "hello@calm.example", "x" * 300_000 + "@calm.example")
    for command in ("validate", "run"):
        args = [command, "weekly_winddown", "--edition", EDITION, "--dry-run"]
        message = mistake(invoke(root, *args[: 4 + (command == "run")]))
        assert f"{path}: sender.reply_to: at most 254 character(s)" in message
        assert len(message) < 1000


def test_a_subject_too_long_for_a_header_names_the_strings_file(root: Path) -> None:
    strings = root / "templates" / "weekly_winddown" / "strings" / "en-US.toml"
    text = strings.read_text()
    strings.write_text(text.replace('subject = "', 'subject = "' + "x" * 1000, 1))
    message = mistake(invoke(root, "validate", "weekly_winddown", "--edition", EDITION))
    assert f"{strings}: subject: 10" in message and "at most 998" in message


@pytest.mark.parametrize(
    "url",
    [
        "mysql://calm:hunter2@127.0.0.1/db",
        "mysql+pymysql://calm:hunter2@db/x",
        "oracle://calm:hunter2@db/x",
        "calm:hunter2@127.0.0.1/db",
        "postgresql+asyncpg://calm:hunter2@db/x",
    ],
)
def test_an_unsupported_database_url_names_the_variable_and_the_schemes(
    root: Path, url: str
) -> None:
    result = invoke(root, "history", "weekly_winddown", env={"CALM_MAIL_DATABASE_URL": url})
    message = mistake(result)
    assert "CALM_MAIL_DATABASE_URL: unsupported database URL" in message
    assert "sqlite" in message and "postgresql" in message
    assert "hunter2" not in result.output


def test_plan_explain_of_an_unknown_user_is_a_mistake(root: Path) -> None:
    args = ["plan", "weekly_winddown", "--edition", EDITION, "--explain", "nobody[x]"]
    message = mistake(invoke(root, *args))
    assert f"user 'nobody[x]' is not in the audience of weekly_winddown {EDITION}" in message
    assert str(root / "data" / "demo" / "users.csv") in message


def test_plan_explain_of_a_known_user_still_explains(root: Path) -> None:
    with (root / "data" / "demo" / "users.csv").open(newline="") as fh:
        user = next(csv.DictReader(fh))["USER_ID"]
    output = ok(invoke(root, "plan", "weekly_winddown", "--edition", EDITION, "--explain", user))
    assert output.startswith(f"user {user}: ")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--grace", "1e300"),
        ("--grace", "nan"),
        ("--reconcile-after", "1e300"),
        ("--reconcile-after", "nan"),
        ("--max-rate", "nan"),
        ("--max-rate", "inf"),
    ],
)
def test_absurd_numbers_on_the_run_command_line(root: Path, option: str, value: str) -> None:
    args = ["run", "weekly_winddown", "--edition", EDITION, "--dry-run", option, value]
    assert option in mistake(invoke(root, *args))


@pytest.mark.parametrize("name", ["x" * 300, "x" * 300 + ".toml", "/tmp/" + "x" * 300 + ".toml"])
def test_a_campaign_name_too_long_for_a_file_name(root: Path, name: str) -> None:
    message = mistake(invoke(root, "validate", name))
    assert message.startswith(f"calm-mail: no campaign {name!r}")
    assert "File name too long" in message


def test_an_outbox_name_too_long_is_a_mistake(root: Path, tmp_path: Path) -> None:
    outbox = tmp_path / ("o" * 300)
    args = ["run", "weekly_winddown", "--edition", EDITION, "--dry-run", "--outbox", str(outbox)]
    assert "File name too long" in mistake(invoke(root, *args))


@pytest.mark.parametrize("out", ["p" * 300 + ".jsonl", "p" * 300 + "/plan.jsonl"])
def test_a_plan_out_name_too_long_is_a_mistake(root: Path, tmp_path: Path, out: str) -> None:
    args = ["plan", "weekly_winddown", "--edition", EDITION, "--out", str(tmp_path / out)]
    message = mistake(invoke(root, *args))
    assert str(tmp_path) in message and "File name too long" in message


def test_the_exit_codes_are_one_table() -> None:
    assert [int(code) for code in errors.ExitCode] == [0, 1, 2, 3]
    assert errors.LockHeld("x").exit_code == errors.ExitCode.BUSY
    for mistake_type in (errors.UsageError, errors.RenderError):
        assert mistake_type("x").exit_code == errors.ExitCode.MISTAKE
    assert errors.ConfigError("x").exit_code == errors.InputError("x").exit_code == 2
    assert errors.PreflightError("x").exit_code == errors.ExitCode.FAILED


def test_help_lists_every_exit_code(tmp_path: Path) -> None:
    output = ok(invoke(tmp_path, "--help"))
    for code in errors.ExitCode:
        assert f"  {int(code)}  {code.meaning}" in output
    assert "3  another process holds the edition's lock" in output


def test_an_unusable_path_from_any_stage_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(RAISED, "toolong", OSError(36, "File name too long", "/x" * 200))
    monkeypatch.setitem(cli.COMMANDS, "raiser", "tests.test_cli:raiser")
    result = invoke(tmp_path, "raiser", "toolong")
    assert result.exit_code == 2 and "File name too long" in result.stderr
    monkeypatch.setitem(RAISED, "disk", OSError(5, "Input/output error"))
    assert not isinstance(invoke(tmp_path, "raiser", "disk").exception, SystemExit)


# ----------------------------------------------------------------------------- fuzz (#16)
# Junk values at any key of the shipped campaign, through `validate` and `plan`: exit 0 or 2,
# never a traceback, and a mistake names the campaign file and a key (or another file).


class RawToml(str):
    """A TOML literal written as is (an integer Python will not print: past 4,300 digits)."""


def toml_literal(value: object) -> str:
    """`value` as a TOML inline value (a tiny writer: the standard library only reads TOML)."""
    if isinstance(value, RawToml):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # JSON's escapes are TOML's; NUL becomes \u0000
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{orjson.dumps(str(k)).decode()} = {toml_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return value.isoformat()  # type: ignore[attr-defined]  # date, time, datetime


def campaign_toml(data: Mapping[str, object]) -> str:
    return "".join(f"{key} = {toml_literal(value)}\n" for key, value in data.items())


SHIPPED_CAMPAIGN = tomllib.loads((REPO / "campaigns" / "weekly_winddown.toml").read_text())


def _leaves(node: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


LEAVES = _leaves(SHIPPED_CAMPAIGN)
_LONG_PART = "x" * 300
JUNK_VALUES = st.one_of(
    st.text(min_size=250, max_size=3000),
    st.text(max_size=20).map(lambda s: s + "\x00" + s),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([3_000_000, 2**63, -1, 0, 3651, 10**20]),
    st.integers(4301, 6000).map(lambda n: RawToml("9" * n)),
    st.sampled_from(["{root}/" + _LONG_PART, "{root}/data/" + _LONG_PART + "/", "/" * 5000]),
    st.sampled_from([float("nan"), float("inf"), 1e308, -0.0, True, [], {}, [[1]], {"a": 1}]),
    st.sampled_from(["x" * 300_000 + "@calm.example", "a\r\nBcc: x@example.com", "../" * 100]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    where=st.sampled_from(LEAVES),
    junk=JUNK_VALUES,
    command=st.sampled_from(["validate", "plan"]),
)
def test_junk_campaign_values_are_exit_0_or_a_named_mistake(
    root: Path, where: tuple[str | int, ...], junk: object, command: str
) -> None:
    data = copy.deepcopy(SHIPPED_CAMPAIGN)
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = junk
    path = root / "campaigns" / "weekly_winddown.toml"
    path.write_text(campaign_toml(data), encoding="utf-8")
    result = invoke(root, command, "weekly_winddown", "--edition", EDITION)
    if result.exit_code == 0 and result.exception is None:
        return
    message = mistake(result)
    key = ".".join(str(part) for part in where if isinstance(part, str))
    named = (str(root), key, junk[:40] if isinstance(junk, str) and junk.strip() else str(root))
    assert any(name in message for name in named), message[:500]  # a file, a key or a path
    assert len(message) < 20_000  # a 300,000-character value is never echoed whole
