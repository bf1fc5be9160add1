"""ops: the orchestration layer. Running an edition and keeping the weekend safe.

`pipeline` is the composition root (`run_edition`: lock, plan, pre-flight, record, compose and
deliver, finish); `checks` holds the checks `validate` and pre-flight share, `preflight` the
edition-time ones; `run_report` what a run did; `job` and `scheduler` the weekend schedule
(APScheduler with its job store in the ledger), `trigger` its cron time; `personalize_job` the
optional Personalize batch inference step; `alerts` the summary log line and Slack.
"""
