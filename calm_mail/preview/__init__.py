"""preview: the editors' view of an edition. One user's (or a persona's) email exactly as a
real send renders it (`calm-mail preview`), and a local page with every arm at desktop and
mobile width, the rule trace and lint warnings, reloading as templates change
(`calm-mail preview serve`)."""
