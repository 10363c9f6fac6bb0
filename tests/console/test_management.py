"""The console with the management API (on a private node): each worker's connection on the
workers page, and the unacked counts on the handlers page."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from eventworker.settings import load_settings
from tests.support.broker import Broker, running
from tests.support.console import console_client
from tests.support.deadletters import target
from tests.support.private_node import private_node


@pytest.mark.timeout(240)
async def test_the_workers_page_lists_each_connection_consuming_from_the_management_api() -> None:
    with private_node() as node:
        settings = load_settings(
            url=node.url,
            exchange="console.x",
            queue_prefix="console.",
            management_url=f"http://127.0.0.1:{node.management_port}",
            connect_timeout=5.0,
            grace=5.0,
        )
        connection = await aio_pika.connect(node.url)
        broker = Broker(connection, settings)
        try:
            async with (
                running(broker, [target], settings),
                console_client(settings, target) as client,
            ):
                deadline = time.monotonic() + 60
                while "eventworker worker" not in (page := (await client.get("/workers")).text):
                    assert time.monotonic() < deadline, page
                    await asyncio.sleep(0.5)
                overview = (await client.get("/")).text
        finally:
            await connection.close()
    assert "consuming" in page and "target" in page and "127.0.0.1" in page
    # Read from the management API ("-" without it).
    assert 'class="num unacked" data-label="Unacked">0<' in overview
