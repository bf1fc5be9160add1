"""The click commands, one module per area of the command line; `calm_mail.cli` maps names to
them lazily. Commands parse options, call one orchestration or stage function, and print."""
