"""track: the SendGrid Event Webhook receiver and the import of events and in-app completions.

`normalize` maps raw events to `records.Event`, `verify` checks signatures and credentials,
`receiver` is the ASGI app, `importer` loads exported event files and completions, `suppress`
turns events into suppressions; the command line is `calm_mail.commands.events`.
"""
