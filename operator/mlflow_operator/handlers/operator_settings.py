"""Operator-wide kopf settings, applied at startup."""

from __future__ import annotations

import logging
from typing import Any

import kopf

# Watches have been seen to go silent without explicit timeouts (kopf issues #585, #957): the server
# closes each watch after server_timeout and kopf reconnects; client_timeout is the hard stop.
WATCH_SERVER_TIMEOUT = 300
WATCH_CLIENT_TIMEOUT = 330
WATCH_CONNECT_TIMEOUT = 30


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    settings.networking.request_timeout = 60
    # No persistence settings: only raw event handlers are registered (the controllers do the rest), so kopf
    # writes no progress or diff-base annotations and adds no finalizer of its own.
    settings.posting.level = logging.INFO
    # Watch-stream errors (API server restarts) back off progressively instead of hammering it.
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60, 120)
