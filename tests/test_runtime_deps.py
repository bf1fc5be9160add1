"""Production code runs on the runtime dependencies alone.

What only the extras install (pyproject's ``sandbox`` and ``dev``) is for the sandbox, the demo,
the benches and the tests. Every runtime module (all of `calm_mail` but the sandbox, the demo and
the command that starts the sandbox) must import, and the command line must start, in a Python
where those packages cannot be imported; and no runtime module names one in an import, not
even inside a function.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_RUNTIME = ("sandbox/", "demo/", "commands/sandbox.py", "commands/demo.py")
# What the sandbox extra is for; held here so that emptying the extra cannot pass this test.
SANDBOX_ONLY = {"httpx", "jsonschema", "uvloop", "httptools"}

# Run in a fresh interpreter: a meta-path finder refuses the blocked packages, as if they were
# not installed, then each module is imported and the failures are printed as JSON.
BLOCKER = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys
    blocked = set(json.loads(sys.argv[1]))
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in blocked)
    assert not loaded, f"loaded before the blocker: {loaded}"

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    """
)
IMPORT_ALL = """
failed = {}
for module in json.loads(sys.argv[2]):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failed[module] = repr(exc)
print(json.dumps(failed))
"""
RUN_CLI = """
from calm_mail.cli import main
sys.argv = ["calm-mail", *json.loads(sys.argv[2])]
main()
"""


def distribution(requirement: str) -> str:
    """``moto[server]>=5.0`` -> ``moto`` (PEP 503 normalized)."""
    name = re.split(r"[\[<>=!~;@ ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def blocked_imports() -> list[str]:
    """The top-level import names whose every installed distribution only an extra declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {distribution(r) for r in [project["name"], *project["dependencies"]]}
    extras = {
        distribution(r) for reqs in project["optional-dependencies"].values() for r in reqs
    } - runtime
    names = {
        name
        for name, dists in importlib.metadata.packages_distributions().items()
        if name.isidentifier() and {distribution(d) for d in dists} <= extras
    }
    return sorted(names)


def runtime_modules() -> list[str]:
    package = ROOT / "calm_mail"
    modules = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if not relative.startswith(NOT_RUNTIME):
            parts = ("calm_mail", *path.relative_to(package).with_suffix("").parts)
            modules.append(".".join(parts).removesuffix(".__init__"))
    return modules


def run_blocked(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + script, json.dumps(blocked_imports()), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )


def test_the_extras_hold_the_sandbox_packages_and_the_runtime_does_not() -> None:
    blocked = set(blocked_imports())
    assert blocked >= SANDBOX_ONLY | {"pytest", "hypothesis", "moto"}
    assert not blocked & {"numpy", "yarl", "pandas", "uvicorn", "starlette", "sendgrid"}
    assert len(runtime_modules()) > 50 and "calm_mail.track.receiver" in runtime_modules()


@pytest.mark.slow
def test_every_runtime_module_imports_without_the_extras() -> None:
    done = run_blocked(IMPORT_ALL, runtime_modules())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


def test_no_runtime_module_names_an_extra_package_even_inside_a_function() -> None:
    blocked = set(blocked_imports())
    found = []
    for module in runtime_modules():
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{module}:{node.lineno} {name}"
                for name in names
                if name.partition(".")[0] in blocked or name.startswith("calm_mail.sandbox")
            ]
    assert found == []


@pytest.mark.slow
def test_the_command_line_starts_without_the_extras_and_says_what_the_sandbox_needs() -> None:
    listed = run_blocked(RUN_CLI, ["--help"])
    assert listed.returncode == 0, listed.stderr
    assert "events" in listed.stdout and "report" in listed.stdout
    assert re.search(r"sandbox +\(needs the sandbox extra\)", listed.stdout)
    serve = run_blocked(RUN_CLI, ["events", "serve", "--help"])
    assert serve.returncode == 0, serve.stderr
    for needs_sandbox in (["sandbox"], ["demo", "--users", "10"]):
        refused = run_blocked(RUN_CLI, needs_sandbox)
        assert refused.returncode == 2, refused.stderr
        assert "the sandbox extra installs: pip install 'calm-mail[sandbox]'" in refused.stderr
        assert "Traceback" not in refused.stderr
