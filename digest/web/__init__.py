"""The web app the links in every message point to, and what serving it safely needs."""

from digest.web.app import create_app
from digest.web.logs import install_token_redaction, redact_tokens, uvicorn_log_config

__all__ = ["create_app", "install_token_redaction", "redact_tokens", "uvicorn_log_config"]
