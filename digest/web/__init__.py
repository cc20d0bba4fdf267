"""HTTP → pages: one Starlette app for readers (sign-up, preferences, unsubscribe), the
editors' area and the public archive, with what serving it safely needs (headers, rate
limits, CSRF, token redaction in logs)."""

from digest.web.app import create_app
from digest.web.logs import install_token_redaction, redact_tokens, uvicorn_log_config

__all__ = ["create_app", "install_token_redaction", "redact_tokens", "uvicorn_log_config"]
