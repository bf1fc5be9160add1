"""ops: the weekend schedule and what keeps it safe.

`scheduler` (APScheduler with its job store in the ledger), `job` (the edition job: lock,
pre-flight, send, announce), `lock` (the edition lock), `preflight`, `personalize_job` (the
optional Personalize batch inference step) and `alerts` (summary log line and Slack).
"""
