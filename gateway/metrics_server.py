"""Serve a Prometheus registry over HTTP on its own port, for any process (readers and bridges import it too)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsServer:
    port: int  # the port bound (useful when 0 was asked for)
    stop: Callable[[], None]


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread. Raises OSError if the port is taken."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return MetricsServer(server.server_port, stop)
