"""deliver: transports (SendGrid, outbox, null) and the exactly-once send engine."""
