"""The whole edition's CPU per recipient - plan, record, compose and send, as a real run does
them - on this tree and on a baseline commit's code, in one run.

Each round is `edition_run.py` in a fresh process: one edition of the bench campaign through
the edition runner, the SendGrid transport posting over HTTP to the sandbox (its own process,
so its CPU is not counted), a fresh SQLite ledger. The baseline's code is a git worktree of the
commit under ``.bench/baseline-<sha>``, imported with ``PYTHONPATH`` from the same venv, its C
id scan built first when it has one (that is how it ran). Both trees plan the same data set,
made once by this tree's generator. Rounds alternate (before, after, ...) because the machine
is shared, and every figure of a tree comes from its best round (least CPU per recipient).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from benchmarks import edition_run
from benchmarks.core import BenchContext, Figure, Section
from benchmarks.data import EDITION, Dataset, dataset
from benchmarks.send import Sandbox, sandbox_process

STAGES = ("preflight", "plan", "record", "compose", "send", "finish")
EDITION_USERS = 1_000_000  # the size the plan's difference is priced at
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeTree:
    """A checkout whose `calm_mail` (and campaign files) a round uses."""

    name: str  # "after" (this tree) or "before" (the baseline)
    root: Path
    label: str  # for the table: "84ac4e5, C id scan"


@dataclass(frozen=True, slots=True, kw_only=True)
class EditionRun:
    """One round's report from `edition_run.py`."""

    runner: str
    cpu_s: float
    wall_s: float
    sent: int
    failed: int
    stage_cpu: dict[str, float] | None
    plan_cpu_s: float | None  # the plan's CPU: its stage, or timed around the planner

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> EditionRun:
        stages = raw["stage_cpu"]
        plan = stages.get("plan") if stages else raw["plan_cpu_s"]
        return cls(
            runner=raw["runner"],
            cpu_s=raw["cpu_s"],
            wall_s=raw["wall_s"],
            sent=raw["sent"],
            failed=raw["failed"] + raw["unknown"],
            stage_cpu=stages,
            plan_cpu_s=plan,
        )

    @property
    def us_per_recipient(self) -> float:
        return self.cpu_s / self.sent * 1e6

    @property
    def beyond_plan_us(self) -> float | None:
        """CPU per recipient of everything but the plan."""
        if self.plan_cpu_s is None:
            return None
        return (self.cpu_s - self.plan_cpu_s) / self.sent * 1e6

    def plan_us_per_user(self, users: int) -> float | None:
        return None if self.plan_cpu_s is None else self.plan_cpu_s / users * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "sent": self.sent,
            "failed_or_unknown": self.failed,
            "us_per_recipient": round(self.us_per_recipient, 1),
            "stage_cpu_s": self.stage_cpu,
            "plan_cpu_s": self.plan_cpu_s,
        }


# --------------------------------------------------------------------------- the code trees


def git(root: Path, *args: str) -> str:
    """`git ARGS` in `root`; RuntimeError with git's message when it fails."""
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def this_tree(ctx: BenchContext) -> CodeTree:
    return CodeTree(name="after", root=ctx.root, label="this tree")


def baseline_tree(ctx: BenchContext) -> CodeTree | str:
    """The baseline commit's worktree, made (or reused) and its C id scan built; or why the
    baseline cannot be run here."""
    if shutil.which("git") is None:
        return "git is not installed"
    try:
        git(ctx.root, "rev-parse", "--git-dir")
    except RuntimeError:
        return f"{ctx.root} is not a git checkout"
    try:
        sha = git(ctx.root, "rev-parse", "--verify", "--quiet", f"{ctx.baseline}^{{commit}}")
    except RuntimeError:
        return f"{ctx.baseline} is not a commit of this clone (a shallow one?)"
    folder = ctx.root / ".bench" / f"baseline-{sha[:12]}"
    if not (folder / ".git").exists():
        ctx.say(f"edition: git worktree add --detach {folder} {sha[:12]}")
        git(ctx.root, "worktree", "prune")
        git(ctx.root, "worktree", "add", "--detach", str(folder), sha)
    elif git(folder, "rev-parse", "HEAD") != sha:
        raise RuntimeError(f"{folder} is not a checkout of {sha}: remove it and run again")
    label = f"{sha[:7]}, " + build_id_scan(folder)
    return CodeTree(name="before", root=folder, label=label)


def build_id_scan(tree: Path) -> str:
    """Build the tree's C id scan when it has one (``python -m calm_mail.native``); says
    which id scan its plan uses."""
    if not (tree / "calm_mail" / "native.py").exists():
        return "no C id scan in that code"
    done = subprocess.run(
        [sys.executable, "-m", "calm_mail.native"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    built = any((tree / "calm_mail" / "inputs").glob("_idscan-*.so"))
    if done.returncode == 0 and built and "not built" not in done.stdout:
        return "C id scan"
    why = (done.stdout + done.stderr).strip().splitlines()
    return f"C id scan NOT BUILT, ids read in Python ({why[-1][:160] if why else 'no output'})"


# --------------------------------------------------------------------------- one round


def edition_round(tree: CodeTree, data: Dataset, sandbox: Sandbox) -> EditionRun:
    """One edition of `data` on `tree`'s code in a fresh process, into a fresh ledger."""
    with tempfile.TemporaryDirectory(prefix="calm-bench-edition-") as tmp:
        args = [str(tree.root), str(data.folder), EDITION, sandbox.url, f"sqlite:///{tmp}/l.db"]
        done = subprocess.run(
            [sys.executable, "-P", edition_run.__file__, *args],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(tree.root)},
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    sandbox.forget()
    if done.returncode != 0:
        raise RuntimeError(f"the edition on {tree.label} failed:\n{done.stderr[-3000:]}")
    raw = orjson.loads(done.stdout.strip().splitlines()[-1])
    if Path(raw["code"]) != tree.root.resolve():
        raise RuntimeError(f"the {tree.name} round imported calm_mail from {raw['code']}")
    run = EditionRun.parse(raw)
    if run.sent == 0:
        raise RuntimeError(f"the edition on {tree.label} sent nothing")
    return run


def run_whole_edition(ctx: BenchContext) -> Section:
    data = dataset(ctx, ctx.sizes.edition_users)
    baseline = baseline_tree(ctx)
    trees = [baseline, this_tree(ctx)] if isinstance(baseline, CodeTree) else [this_tree(ctx)]
    runs: dict[str, list[EditionRun]] = {tree.name: [] for tree in trees}
    with sandbox_process(0.0) as sandbox:
        for r in range(ctx.sizes.rounds):
            for tree in trees:
                ctx.say(
                    f"edition: round {r + 1}/{ctx.sizes.rounds}, {tree.name} ({tree.label}), "
                    f"{data.users:,} users"
                )
                runs[tree.name].append(edition_round(tree, data, sandbox))
    best = {
        name: min(rounds, key=lambda run: run.us_per_recipient) for name, rounds in runs.items()
    }
    pair = Pair(
        after=best["after"],
        before=best.get("before"),
        label=baseline.label if isinstance(baseline, CodeTree) else "",
        missing="" if isinstance(baseline, CodeTree) else f"no baseline: {baseline}",
    )
    section = Section(
        name="edition",
        title=f"Whole edition - {data.users:,} users, plan + record + compose + send, "
        "this tree next to its baseline",
        method="CPU time (user + system, all threads) of run_edition in a fresh process; "
        "SendGrid transport over HTTP to the sandbox (its own process, no latency, no rate "
        "limit), fresh SQLite ledger, no pre-flight; rounds alternate, best of "
        f"{ctx.sizes.rounds} each; baseline: the code of {ctx.baseline}",
        details={
            "users": data.users,
            "baseline": pair.label or pair.missing,
            "rounds": {name: [run.as_dict() for run in rounds] for name, rounds in runs.items()},
        },
    )
    section.figures += [*pair.whole(), *pair.stages(), *pair.plan(data.users)]
    return section


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True, slots=True, kw_only=True)
class Pair:
    """The best round of this tree and of the baseline (None when it could not run)."""

    after: EditionRun
    before: EditionRun | None
    label: str  # the baseline's, for the table
    missing: str  # why there is no baseline, or ""

    def figure(self, key: str, label: str, value: float | None, old: float | None) -> Figure:
        """A figure in microseconds of this tree next to the baseline's, if the baseline has it."""
        return Figure(
            key=f"edition.{key}",
            label=f"edition: {label}",
            value=value,
            unit="us",
            baseline=old,
            baseline_label=self.label,
            note=self.missing,
        )

    def whole(self) -> list[Figure]:
        after, before = self.after, self.before
        total = self.figure(
            "cpu_us_per_recipient",
            "CPU per recipient (plan + record + compose + send)",
            after.us_per_recipient,
            before.us_per_recipient if before else None,
        )
        sent = f"{after.sent:,} recipients, {after.cpu_s:.1f} s of CPU"
        if after.failed:
            sent += f"; {after.failed} failed or unknown!"
        if before and before.sent != after.sent:
            sent += f"; the baseline sent {before.sent:,}"
        beyond = self.figure(
            "beyond_plan_us_per_recipient",
            "CPU per recipient after the plan (record, compose, send)",
            after.beyond_plan_us,
            before.beyond_plan_us if before else None,
        )
        return [replace(total, note=self.missing or sent), beyond]

    def before_stages(self) -> dict[str, float]:
        """The baseline's CPU seconds per stage: its own, or its plan timed on its own."""
        if self.before is None:
            return {}
        if self.before.stage_cpu is not None:
            return self.before.stage_cpu
        return {} if self.before.plan_cpu_s is None else {"plan": self.before.plan_cpu_s}

    def stages(self) -> list[Figure]:
        """Per stage: CPU per recipient, with its seconds and share of the run."""
        after = self.after
        if after.stage_cpu is None:
            return [
                Figure(
                    key="edition.stages",
                    label="edition: CPU per stage",
                    value=None,
                    unit="us",
                    note=f"skipped: {after.runner}.RunReport has no stage_cpu",
                )
            ]
        known = [name for name in STAGES if name in after.stage_cpu]
        spent = {
            name: after.stage_cpu[name]
            for name in known + sorted(set(after.stage_cpu) - set(known))
        }
        spent["outside the stages"] = after.cpu_s - sum(after.stage_cpu.values())
        old = self.before_stages()
        figures = []
        for name, seconds in spent.items():
            then = old.get(name)
            figure = self.figure(
                f"stage_{name.replace(' ', '_')}_us_per_recipient",
                f"{name}, CPU per recipient",
                seconds / after.sent * 1e6,
                None if then is None or self.before is None else then / self.before.sent * 1e6,
            )
            share = f"{seconds:.2f} s, {seconds / after.cpu_s:.1%} of the run"
            figures.append(replace(figure, note=share))
        return figures

    def plan(self, users: int) -> list[Figure]:
        """The plan's CPU per user of the audience; what the difference costs at 1M users."""
        now = self.after.plan_us_per_user(users)
        then = self.before.plan_us_per_user(users) if self.before else None
        figures = [
            replace(
                self.figure("plan_us_per_user", f"plan CPU per user (of {users:,})", now, then),
                note=self.missing
                or "a runner without stage_cpu: timed around plan_edition, arms recorded",
            )
        ]
        if now is not None and then is not None:
            scale = EDITION_USERS / 1e6
            figures.append(
                Figure(
                    key="edition.plan_difference_1m_users_cpu_s",
                    label=f"edition: the plan's difference for {EDITION_USERS:,} users",
                    value=(now - then) * scale,
                    unit="CPU s",
                    note=f"plan of {EDITION_USERS:,} users: {now * scale:,.0f} CPU s, before "
                    f"{then * scale:,.0f} (positive: slower now)",
                )
            )
        return figures
