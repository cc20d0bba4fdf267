"""Watching the web app: ``/readyz`` (the store answers) and the Prometheus metrics at
``/metrics``.

``/healthz`` (in :mod:`digest.web.app`) says only that the process serves; ``/readyz``
says that it can do its work, which needs the store. The metrics are read from the store
on each scrape by a collector of gauges, so with several ``digest serve`` and
``digest run`` processes every scrape of any of them gives the same, current figures.
They are off unless ``[web] metrics = true``, and then answered only to the addresses of
``[web] metrics_from``: everyone else gets the page of a path that does not exist.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from digest.config import Settings
from digest.config.web import address_networks
from digest.store import Store
from digest.store.metrics import StoreCounts, store_answers, store_counts
from digest.web.pages import not_found, settings_of, store_of

__all__ = ["StoreCollector", "metrics", "ready"]

log = logging.getLogger(__name__)

#: The bounce kind that is a reader's complaint (a feedback loop report), counted apart.
COMPLAINT = "complaint"


def ready(request: Request) -> Response:
    """``GET /readyz``: 200 when the store answers a ``SELECT 1``, else 503."""
    problem = store_answers(store_of(request).engine)
    if problem is not None:
        log.warning("readiness: the store does not answer (%s)", problem)
        return PlainTextResponse("store unavailable", status_code=503)
    return PlainTextResponse("ready")


class StoreCollector:
    """The store's counts as gauges, read afresh on every :meth:`collect`.

    The configured newsletters get a sample of 0 where the store has none, so that
    "no complaints" and "nothing queued" are figures, not absent series.
    """

    def __init__(self, store: Store, newsletters: Iterable[str] = ()) -> None:
        self.store = store
        self.newsletters = tuple(newsletters)

    def collect(self) -> Iterator[Metric]:
        counts = store_counts(self.store.engine)
        yield from self._deliveries(counts)
        subscribers = GaugeMetricFamily(
            "digest_subscribers",
            "Subscribers by status (active, unsubscribed, bounced, erased, ...).",
            labels=["status"],
        )
        for status, count in sorted(counts.subscribers.items()):
            subscribers.add_metric([status], count)
        yield subscribers
        yield from self._mail(counts)
        yield from self._collects(counts)

    def _deliveries(self, counts: StoreCounts) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "digest_deliveries",
            "Deliveries (one per reader and issue) by state.",
            labels=["newsletter", "issue", "state"],
        )
        for labels, count in sorted(counts.deliveries.items()):
            deliveries.add_metric(list(labels), count)
        yield deliveries
        bounces = GaugeMetricFamily(
            "digest_bounced_deliveries",
            "Deliveries whose most severe bounce is of this kind (delayed, soft, policy, hard).",
            labels=["newsletter", "kind"],
        )
        complaints = GaugeMetricFamily(
            "digest_complaints",
            "Deliveries a reader reported as spam (feedback loop reports).",
            labels=["newsletter"],
        )
        complained = dict.fromkeys(self.newsletters, 0)
        for (newsletter, kind), count in sorted(counts.bounces.items()):
            if kind == COMPLAINT:
                complained[newsletter] = count
            else:
                bounces.add_metric([newsletter, kind], count)
        for newsletter, count in sorted(complained.items()):
            complaints.add_metric([newsletter], count)
        yield bounces
        yield complaints

    def _mail(self, counts: StoreCounts) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "digest_mail_queued",
            "Mail of the web app waiting to be sent (kind 'confirm': confirmation requests "
            "of sign-ups), retried while the relay refuses it.",
            labels=["newsletter", "kind"],
        )
        waiting = {(newsletter, "confirm"): 0 for newsletter in self.newsletters}
        for labels, count in sorted((waiting | counts.queued_mail).items()):
            queued.add_metric(list(labels), count)
        yield queued
        given_up = GaugeMetricFamily(
            "digest_mail_given_up",
            "Mail of the web app given up after its retries.",
            labels=["newsletter", "kind"],
        )
        for labels, count in sorted(counts.given_up_mail.items()):
            given_up.add_metric(list(labels), count)
        yield given_up

    def _collects(self, counts: StoreCounts) -> Iterator[Metric]:
        # The store keeps the time of each source's last collect and whether it failed,
        # not the time of its last successful one once a later one failed.
        last = GaugeMetricFamily(
            "digest_source_last_collect_timestamp_seconds",
            "When a source was last collected (successfully or not), as a Unix time.",
            labels=["newsletter", "source"],
        )
        failing = GaugeMetricFamily(
            "digest_source_collect_failing",
            "1 if the last collect of a source failed, else 0.",
            labels=["newsletter", "source"],
        )
        for labels, (at, failed) in sorted(counts.collects.items()):
            last.add_metric(list(labels), at.timestamp())
            failing.add_metric(list(labels), int(failed))
        yield last
        yield failing


def _allowed(request: Request, settings: Settings) -> bool:
    if request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in address_networks(settings.web.metrics_from))


def metrics(request: Request) -> Response:
    """``GET /metrics`` (routed only with ``[web] metrics = true``): the Prometheus
    metrics, to ``[web] metrics_from`` only; the 404 page to everyone else."""
    settings = settings_of(request)
    if not _allowed(request, settings):
        return not_found(request)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store_of(request), (nl.id for nl in settings.newsletters)))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    try:
        body = encode(registry)
    except SQLAlchemyError as exc:
        log.warning("metrics: the store does not answer (%s)", type(exc).__name__)
        return PlainTextResponse("store unavailable", status_code=503)
    return Response(body, headers={"content-type": content_type})
