"""Run summaries and failure alerts: one JSON log line, and Slack when configured.

Every run ends with `announce`: the summary (counts per arm, failures by reason, duration,
pre-flight result) is logged as ONE JSON line on the ``calm_mail.run`` logger, and posted to a
Slack incoming webhook when one is configured (``$CALM_MAIL_SLACK_WEBHOOK_URL`` — or the variable
named by ``[alerts] slack_webhook_env`` — else ``[alerts] slack_webhook_url``). Alerting never
fails a run: a webhook that is down is logged and forgotten. The webhook URL is a secret (its
path is the credential), so only its host ever reaches a log.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from calm_mail.campaign import Campaign
from calm_mail.ops.run_report import RunReport

run_log = logging.getLogger("calm_mail.run")
log = logging.getLogger(__name__)


def run_summary(report: RunReport) -> dict[str, Any]:
    """The summary of a finished run, with its pre-flight's verdict when it had one."""
    per_arm: dict[str, dict[str, int]] = {}
    for (state, arm), n in sorted(report.counts.items()):
        per_arm.setdefault(arm, {})[state] = n
    return {
        "event": "run_finished",
        "ok": report.ok,
        "campaign": report.campaign,
        "edition": report.edition,
        "dry_run": report.dry_run,
        "state": report.state,
        "sent_this_run": report.tally.total_sent,
        "arms": per_arm,
        "failures": dict(sorted(report.tally.failed.items())),
        "unknown_fate": report.tally.unknown,
        "stopped": report.tally.stopped,
        "seconds": round(report.seconds, 3),
        "preflight": _preflight_brief(
            None if report.preflight is None else report.preflight.as_dict()
        ),
    }


def failure_summary(
    campaign: str,
    edition: str,
    reason: str,
    *,
    seconds: float,
    preflight: Mapping[str, Any] | None = None,
    failures: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The summary of a run that failed before or while sending."""
    return {
        "event": "run_failed",
        "ok": False,
        "campaign": campaign,
        "edition": edition,
        "reason": reason,
        "failures": dict(sorted((failures or {}).items())),
        "seconds": round(seconds, 3),
        "preflight": _preflight_brief(preflight),
    }


def _preflight_brief(preflight: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if preflight is None:
        return None
    failed = [c["name"] for c in preflight.get("checks", ()) if not c.get("ok")]
    return {"ok": bool(preflight.get("ok")), "failed": failed}


def announce(summary: Mapping[str, Any], campaign: Campaign | None = None) -> None:
    """Log `summary` as one JSON line and post it to Slack when configured. Never raises."""
    line = orjson.dumps(summary, option=orjson.OPT_SORT_KEYS, default=str).decode()
    run_log.log(logging.INFO if summary.get("ok") else logging.ERROR, line)
    url = webhook_url(campaign)
    if url:
        timeout = campaign.alerts.timeout_s if campaign is not None else 10.0
        post_slack(url, slack_message(summary), timeout_s=timeout)


def webhook_url(campaign: Campaign | None) -> str | None:
    env_name = campaign.alerts.slack_webhook_env if campaign else "CALM_MAIL_SLACK_WEBHOOK_URL"
    from_env = os.environ.get(env_name)
    if from_env:
        return from_env
    return campaign.alerts.slack_webhook_url if campaign else None


def redact(url: str) -> str:
    """Only the scheme and host: the path of an incoming-webhook URL is its credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def post_slack(url: str, message: Mapping[str, Any], *, timeout_s: float = 10.0) -> bool:
    """POST `message` to a Slack incoming webhook; True when Slack said 2xx. Never raises.

    The stdlib client on purpose: httpx logs every request's full URL at INFO, and this URL's
    path is the credential.
    """
    request = urllib.request.Request(
        url,
        data=orjson.dumps(dict(message)),
        headers={"Content-Type": "application/json", "User-Agent": "calm-mail"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        log.warning("alert to %s refused: HTTP %s", redact(url), exc.code)
        return False
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, bad URLs
        reason = getattr(exc, "reason", exc)
        log.warning("alert to %s not sent: %s", redact(url), type(reason).__name__)
        return False
    return True


def slack_message(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's ``{"text", "blocks"}``: a headline, then arms, failures and pre-flight."""
    headline = _headline(summary)
    lines = []
    for arm, states in (summary.get("arms") or {}).items():
        counts = ", ".join(f"{state} {n:,}" for state, n in states.items())
        lines.append(f"• *{arm}*: {counts}")
    for reason, n in (summary.get("failures") or {}).items():
        lines.append(f"• failed {n:,} × {reason}")
    preflight = summary.get("preflight")
    if preflight is not None:
        verdict = "passed" if preflight["ok"] else "failed: " + ", ".join(preflight["failed"])
        lines.append(f"• pre-flight {verdict}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}}
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"took {summary.get('seconds', 0)} s"}],
        }
    )
    return {"text": headline, "blocks": blocks}


def _headline(summary: Mapping[str, Any]) -> str:
    what = f"{summary.get('campaign')} {summary.get('edition')}"
    if summary.get("event") == "run_failed":
        return f":red_circle: {what} failed: {summary.get('reason')}"
    if summary.get("ok"):
        return f":large_green_circle: {what} sent ({summary.get('sent_this_run', 0):,} this run)"
    stopped = summary.get("stopped") or summary.get("state")
    return f":large_yellow_circle: {what} not finished: {stopped}"
