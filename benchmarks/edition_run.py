"""One whole edition of the bench campaign, in this process, on whichever `calm_mail` comes
first on the path: the child of the `edition` section.

``python -P benchmarks/edition_run.py ROOT DATA EDITION API_HOST LEDGER_URL`` loads the
campaign from ROOT's ``campaigns/``, points its inputs at the data set DATA, runs the edition
through the edition runner (SendGrid transport to API_HOST, a fresh ledger at LEDGER_URL, no
pre-flight) and prints one JSON line: the CPU seconds (user + system, all threads) of the run,
recipients sent, and the CPU seconds per stage when the runner reports them.

The section runs this file on the current tree and on a baseline commit's tree
(``PYTHONPATH=TREE``), so it imports only what both have: stdlib, orjson, campaign loading,
`Ledger.connect`, `Edition.parse` and the runner. It never imports `benchmarks`, whose modules
need the current code; ``-P`` keeps its own folder off the path. `bench_campaign` is defined
here for that reason and is the bench's one definition of the campaign pointed at its data.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.edition import Edition
from calm_mail.store import Ledger

CAMPAIGN = "weekly_winddown"
API_KEY = "SG.bench"  # the sandbox takes any SG.* key
# The composition root when the tree has it, else the runner it replaces.
RUNNERS = ("calm_mail.ops.pipeline", "calm_mail.deliver.run")
UNTHROTTLED = 1e9  # mail/s: the campaign's rate limit would only add wall time


def bench_campaign(root: Path, folder: Path) -> Campaign:
    """The shipped campaign (from `root`) with its inputs pointed at a bench data set."""
    campaign = load_campaign(CAMPAIGN, root)
    inputs = campaign.inputs.model_copy(
        update={
            "catalog": f"{folder}/catalog.csv",
            "audience": f"{folder}/users.csv",
            "recommendations": f"{folder}/personalize/{{edition}}/",
            "editorial": f"{folder}/editorial/{{edition}}.toml",
            "history": f"{folder}/completions.csv",
        }
    )
    return campaign.model_copy(update={"inputs": inputs})


def runner() -> Any:
    """The first module of `RUNNERS` this tree has (an error inside one is not skipped)."""
    for name in RUNNERS:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    raise SystemExit(f"none of {', '.join(RUNNERS)} in this tree")


def time_plan_calls() -> list[float]:
    """CPU seconds of every call to ``calm_mail.plan.planner.plan_edition`` from now on, for a
    runner that reports no stage CPU (the one it replaces looks the planner up when it runs)."""
    try:
        from calm_mail.plan import planner
    except ImportError:
        return []
    planned: Callable[..., Any] = planner.plan_edition
    spent: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return planned(*args, **kwargs)
        finally:
            spent.append(time.process_time() - started)

    planner.plan_edition = timed
    return spent


def options(module: Any, api_host: str, now: datetime) -> Any:
    fields = module.RunOptions.__dataclass_fields__
    wanted = {"api_key": API_KEY, "api_host": api_host, "now": now, "preflight": False}
    if "max_rate" in fields:
        wanted["max_rate"] = UNTHROTTLED
    return module.RunOptions(**wanted)


def run(root: str, data: str, edition_key: str, api_host: str, ledger_url: str) -> dict[str, Any]:
    import calm_mail

    module = runner()
    campaign = bench_campaign(Path(root), Path(data))
    edition = Edition.parse(edition_key)
    now = datetime.combine(edition.send_date, datetime.min.time(), UTC) - timedelta(days=1)
    plan_calls = time_plan_calls() if module.__name__ == RUNNERS[-1] else []
    with Ledger.connect(ledger_url) as ledger:
        cpu, wall = time.process_time(), time.perf_counter()
        report = module.run_edition(campaign, edition, ledger, options(module, api_host, now))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stage_cpu = getattr(report, "stage_cpu", None)
    return {
        "code": str(Path(calm_mail.__file__).resolve().parent.parent),
        "runner": module.__name__,
        "cpu_s": cpu,
        "wall_s": wall,
        "sent": report.tally.total_sent,
        "failed": sum(report.tally.failed.values()),
        "unknown": report.tally.unknown,
        "state": report.state,
        "stage_cpu": None if stage_cpu is None else dict(stage_cpu),
        "plan_cpu_s": sum(plan_calls) if plan_calls else None,
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(run(*sys.argv[1:])).decode() + "\n")
