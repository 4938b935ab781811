"""Serving the registry-events receiver: over HTTPS with a certificate from a Secret in the operator's namespace
(issued and renewed by the operator, or written by cert-manager), or over plain HTTP when no Secret is named.

The receiver starts once a certificate is there (cert-manager may take a moment); until then every resource
polls. The Secret is checked again every REFRESH_SECONDS: a renewed certificate is loaded into the running
server (new connections use it), and a new CA is handed to the TrackingServers (rt.events_ca), whose servers
must trust it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from mlflow_operator.builders.common import labels, metadata
from mlflow_operator.handlers.registry_events import start_receiver
from mlflow_operator.handlers.runtime import Runtime
from mlflow_operator.logic import certificates as certs

logger = logging.getLogger("mlflow_operator.registry_events")
REFRESH_SECONDS = 3600.0
WAIT_SECONDS = 15.0  # while the Secret is missing (cert-manager has not issued yet) or the API is unreachable


@dataclass(frozen=True)
class TlsSettings:
    namespace: str
    secret: str
    names: tuple[str, ...]  # the DNS names the certificate must carry (the receiver URL's host)
    issue: bool = True  # False: cert-manager issues into the Secret; the operator only reads it


def tls_secret(settings: TlsSettings, material: certs.TlsMaterial) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(settings.secret, settings.namespace, labels("mlflow-operator", "registry-events")),
        "type": "kubernetes.io/tls",
        "stringData": material.secret_data(),
    }


async def current_material(rt: Runtime, settings: TlsSettings) -> certs.TlsMaterial | None:
    """The Secret's certificate, issued or renewed first when the operator issues and it is due."""
    data = await rt.status.read_secret(settings.secret, settings.namespace)
    material = certs.TlsMaterial.from_secret(data or {})
    reason = certs.renewal_reason(material, settings.names, rt.now())
    if reason is None:
        return material
    if not settings.issue:
        if material is not None:
            logger.warning(
                "registry-events certificate in Secret %s: %s (cert-manager renews it)", settings.secret, reason
            )
        return material
    issued = certs.issue(settings.names, rt.now(), material)
    if data is None:
        await rt.status.create_if_absent(tls_secret(settings, issued))
    else:
        await rt.status.patch_secret(settings.secret, settings.namespace, dict(issued.secret_data()))
    logger.info("registry-events certificate issued into Secret %s/%s: %s", settings.namespace, settings.secret, reason)
    # Re-read: another operator process (a rolling update) may have written its own first.
    return certs.TlsMaterial.from_secret(await rt.status.read_secret(settings.secret, settings.namespace) or {})


def load_chain(context: ssl.SSLContext, material: certs.TlsMaterial) -> None:
    """ssl loads certificates from files only: a private temporary directory, removed right after."""
    with tempfile.TemporaryDirectory(prefix="registry-events-") as directory:
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        cert.write_text(material.tls_crt)
        key.touch(mode=0o600)
        key.write_text(material.tls_key)
        context.load_cert_chain(cert, key)


def server_context(material: certs.TlsMaterial) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(context, material)
    return context


@dataclass
class ReceiverService:
    """The receiver's lifetime: started when its certificate is available, refreshed, stopped at shutdown."""

    rt: Runtime
    listen: tuple[str, int]
    url: str
    tls: TlsSettings | None = None
    runner: web.AppRunner | None = None
    context: ssl.SSLContext | None = None
    served: certs.TlsMaterial | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        if self.tls is None:
            self.runner = await start_receiver(self.rt, *self.listen)
            self.rt.events_url = self.url
            return
        self._task = asyncio.create_task(self._keep_serving(), name="registry-events-tls")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.runner is not None:
            await self.runner.cleanup()

    async def _keep_serving(self) -> None:
        while True:
            try:
                ready = await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the API server unreachable, a Secret we may not read: the receiver keeps its cert
                logger.exception("registry-events certificate check failed; retrying")
                ready = False
            await asyncio.sleep(REFRESH_SECONDS if ready else WAIT_SECONDS)

    async def refresh(self) -> bool:
        """Serve the Secret's current certificate; False while there is none."""
        assert self.tls is not None
        material = await current_material(self.rt, self.tls)
        if material is None:
            logger.info("registry-events receiver waits for its certificate in Secret %s", self.tls.secret)
            return False
        if self.context is None:
            self.context = server_context(material)
            self.runner = await start_receiver(self.rt, *self.listen, tls=self.context)
        elif material != self.served:
            load_chain(self.context, material)
            logger.info("registry-events receiver serves its renewed certificate")
        self.served = material
        self.rt.events_ca = material.ca_crt
        self.rt.events_url = self.url
        return True
