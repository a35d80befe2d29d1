"""Standby replicas, the changelog-tracking producer and the web surface, as configured."""

from __future__ import annotations

from pathlib import Path

from faust.web.drivers import by_url

from streams.model.server import ModelServer
from streams.settings import load_settings
from streams.worker import faust_compat
from streams.worker.app import create_app
from streams.worker.metrics import Metrics


def test_standbys_the_tracking_producer_and_only_the_workers_pages(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, standby_replicas=2)
    metrics = Metrics()
    w = create_app(
        settings,
        models=ModelServer(settings.model_path, threads=1, on_outcome=metrics.model_outcome),
        metrics=metrics,
    )
    try:
        conf = w.app.conf
        assert conf.table_standby_replicas == 2
        assert conf.broker_producer[0].scheme == faust_compat.CONSUMER_SCHEME
        assert faust_compat.BatchTransport.Producer is faust_compat.ChangelogTrackingProducer
        # No router, tables, graph, statistics, performance or index pages.
        assert not conf.web_router_enabled and not conf.web_tables_enabled
        assert not conf.web_graph_enabled and not conf.web_stats_enabled
        assert not conf.web_metrics_enabled
        assert by_url(str(conf.web)) is faust_compat.HardenedWeb
        assert w.app.web.blueprints._enabled == []  # Faust's own pages: none
        paths = {route.resource.canonical for route in w.app.web.web_app.router.routes()}
        assert paths == {"/metrics", "/livez", "/readyz"}
    finally:
        w.executor.shutdown()


def test_one_standby_by_default() -> None:
    assert load_settings().standby_replicas == 1
