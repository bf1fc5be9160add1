"""The demo: a fictional data set (`data`), simulated app usage (`app_usage`), the live loop
through the sandbox, receiver and report (`live`), and `calm-mail demo` itself (`walkthrough`).
Nothing in production imports this package."""
