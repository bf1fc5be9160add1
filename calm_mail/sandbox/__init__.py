"""The local SendGrid v3 sandbox (`calm-mail sandbox`): staging, demos, load tests and tests."""

from calm_mail.sandbox.app import create_app
from calm_mail.sandbox.config import ArmBehaviour, BehaviourModel, Recipient, SandboxConfig
from calm_mail.sandbox.server import SandboxHandle, run_sandbox, start_sandbox
from calm_mail.sandbox.webhook import WebhookSigner

__all__ = [
    "ArmBehaviour",
    "BehaviourModel",
    "Recipient",
    "SandboxConfig",
    "SandboxHandle",
    "WebhookSigner",
    "create_app",
    "run_sandbox",
    "start_sandbox",
]
