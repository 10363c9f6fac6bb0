"""The Grafana dashboard in docs/ loads as JSON and queries only metrics a worker exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from eventworker import Context, Event, Reject, handler
from eventworker.settings import Settings
from tests.support.broker import Broker, wait_for
from tests.support.metrics import eventually, observed, scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
#: Metric names in PromQL: ours and the process collector's.
_METRIC = re.compile(r"\b(?:eventworker|process)_[a-z_]+\b")


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and templating queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def test_the_dashboard_is_json_with_panels_that_query_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "eventworker"
    targets = [target for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(targets) > 20
    assert all(target["expr"] for target in targets)


async def test_every_metric_the_dashboard_queries_exists_and_every_metric_is_shown(
    broker: Broker, settings: Settings
) -> None:
    @handler("dash.event")
    async def dash(event: Event[Any], ctx: Context) -> None:
        if event.id == "dead-letter":
            raise Reject("dead_lettered")

    s = settings.model_copy(update={"metrics_poll_interval": 0.1})
    async with observed(broker, [dash], s) as (worker, metrics, port):
        await broker.publish("dash.event", b"{}", message_id="ok")
        await broker.publish("dash.event", b"{}", message_id="dead-letter")
        dead = worker.routes[0].dead_letter_queue

        async def settled() -> bool:
            samples = await scrape(port)
            dead_lettered = (
                "eventworker_dead_letter_messages",
                frozenset({("handler", "dash"), ("queue", dead)}),
            )
            acked = ("eventworker_messages_acked_total", frozenset({("handler", "dash")}))
            return samples.get(dead_lettered) == 1 and samples.get(acked) == 1

        await eventually(settled)
        await wait_for(lambda: worker.in_flight == 0)
        samples = await scrape(port)
        text = metrics.exposition()[0].decode()
    exposed = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert {name for name, _ in samples} <= exposed
    # Declared but without a sample in this worker (no delay levels, no schedules): the family,
    # under the name a query uses.
    exposed |= {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if not family.samples
    }
    queried = {
        name
        for query in _queries(json.loads(DASHBOARD.read_text()))
        for name in _METRIC.findall(query)
    }
    assert queried, "the dashboard queries nothing"
    assert sorted(queried - exposed) == []
    # And the other way: every eventworker metric has a panel.
    families = {
        family.name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("eventworker_")
    }
    unshown = {f for f in families if not any(q.startswith(f) for q in queried)}
    assert sorted(unshown) == []
