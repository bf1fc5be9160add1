"""compose: MJML compiled once per template, Jinja2 per user -> `records.ComposedMessage`."""
