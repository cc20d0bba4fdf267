"""The app of each process of ``digest serve --workers N``.

uvicorn starts every worker as a new process that imports the app by name: nothing of
the command's process reaches it but the environment. ``digest serve`` puts there what
it was given (:func:`worker_state`), and :func:`worker_app` builds the app from that as
the command does for itself: logging with secrets and tokens masked, the settings, the
store (migrated by the command before the workers start), the app.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os

import click
from starlette.applications import Starlette

from digest.cli.base import State, redact
from digest.cli.logs import log_handler
from digest.config import load_settings, secret_environment, secret_values
from digest.core.redact import install_log_redaction
from digest.store import Store, resolve_store_url
from digest.web import create_app, install_token_redaction
from digest.web.logs import log_uvicorn_through_root

__all__ = ["WORKER_ENVIRONMENT", "keep_out_of_collections", "worker_app", "worker_state"]

#: The variable that carries the command's options to its workers.
WORKER_ENVIRONMENT = "DIGEST_SERVE_WORKER"


def worker_state(st: State, rate_limit: str) -> str:
    """What a worker needs of the running command, as the value of WORKER_ENVIRONMENT."""
    root = click.get_current_context().find_root()
    return json.dumps(
        {
            "config": str(st.config.resolve()),
            "debug": st.debug,
            "log_format": root.params.get("log_format") or "text",
            "rate_limit": rate_limit,
        }
    )


def worker_app() -> Starlette:
    """The app of one worker (uvicorn calls it in the worker's process)."""
    given = json.loads(os.environ[WORKER_ENVIRONMENT])
    logging.basicConfig(handlers=[log_handler(given["log_format"])], level=logging.WARNING)
    if given["debug"]:
        logging.getLogger("digest").setLevel(logging.DEBUG)
    redact.add(*secret_environment(os.environ))
    install_log_redaction(redact)
    settings = load_settings(given["config"])
    redact.add(*secret_values(settings))
    log_uvicorn_through_root()  # uvicorn's lines in digest's format, as without workers
    install_token_redaction()
    store = Store.open(
        resolve_store_url(settings.store.url, settings.base_dir),
        migrate=False,
        secret_key=settings.secret_key,
    )
    atexit.register(store.close)
    app = create_app(settings, store, rate_limit=given["rate_limit"], send_mail=True)
    keep_out_of_collections()
    return app


def keep_out_of_collections() -> None:
    """Leave what the process holds once its app is built out of later garbage collections.

    Modules, settings, templates and the app live as long as the process. Python's
    full collections scan every tracked object each time, and requests (a rate limit's
    window of hits, say) keep adding long-lived ones that set them off: during a burst
    of one-click POSTs (benchmarks/web_burst.py) a dozen full collections held every
    request for 60 ms each on average, up to 120 ms; with the 110,000 objects of the
    built app frozen, for 20 ms, up to 60 ms. What requests create is collected as
    before; what was alive here and dies later stays (the app's objects do not die).
    """
    gc.collect()
    gc.freeze()
