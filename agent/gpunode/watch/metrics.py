"""/metrics on localhost through prometheus_client (the optional `watch` extra), from the same
families the watcher's textfile holds (gpunode.prometheus.watch_families)."""

from __future__ import annotations

from collections.abc import Callable

LOCALHOST = "127.0.0.1"


class WatchCollector:
    """A prometheus_client collector that reads the watcher's document at each scrape."""

    def __init__(self, document: Callable[[], dict]) -> None:
        self.document = document

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from gpunode.prometheus import watch_families

        for family in watch_families(self.document()):
            if not family.samples:
                continue
            keys = list(family.samples[0][0])
            if family.type == "counter":
                metric = CounterMetricFamily(family.name.removesuffix("_total"), family.help, labels=keys)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=keys)
            for labels, value in family.samples:
                metric.add_metric([labels.get(k, "") for k in keys], float(value))
            yield metric


def serve(document: Callable[[], dict], port: int, address: str = LOCALHOST):
    """Start the HTTP server thread; -> (server, thread). ImportError without prometheus_client."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatchCollector(document))
    return start_http_server(port, addr=address, registry=registry)
