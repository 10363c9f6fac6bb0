"""Fixtures of the fault-injection suite: a rig on the shared broker (faults that touch only
this test's own connections and queues) or on a private node (faults that stop, block or
reconfigure a broker). See docs/reliability.md."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from eventworker.settings import Settings
from tests.faults.rig import Rig
from tests.support.control import Control, have_rabbitmqctl
from tests.support.private_node import PrivateNode, why_no_private_node
from tests.support.proxy import Proxy

#: The catalogue's defaults (guide §7): one worker, concurrency 16, prefetch 32.
CATALOGUE = {"concurrency": 16, "prefetch": 32, "grace": 10.0}


@pytest.fixture(scope="session")
def private_node() -> Iterator[PrivateNode]:
    """One private broker node for the session (a boot takes 5-15 s on two cores)."""
    reason = why_no_private_node()
    if reason:
        pytest.skip(reason)
    node = PrivateNode(f"ew-fault-{os.getpid()}", tls=True)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def node(private_node: PrivateNode) -> Iterator[PrivateNode]:
    """The private node, healed after the test (app running, default watermark, no policy)."""
    yield private_node
    private_node.heal()


@pytest.fixture
async def shared_rig(settings: Settings, tmp_path: Path) -> AsyncIterator[Rig]:
    """A rig on the shared broker: only this test's connections and queues are touched."""
    if not have_rabbitmqctl():
        pytest.skip("needs rabbitmqctl to look into the broker's queues")
    async for rig in _rig(settings.model_copy(update=CATALOGUE), Control(), tmp_path):
        yield rig


@pytest.fixture
async def node_rig(node: PrivateNode, settings: Settings, tmp_path: Path) -> AsyncIterator[Rig]:
    """A rig on the private node."""
    url = type(settings.url)(node.url)
    async for rig in _rig(
        settings.model_copy(update={**CATALOGUE, "url": url}), node.ctl, tmp_path
    ):
        yield rig


async def _rig(settings: Settings, control: Control, folder: Path) -> AsyncIterator[Rig]:
    connection = await aio_pika.connect(settings.url.get_secret_value())
    rig = Rig(settings, control, folder, connection)
    try:
        yield rig
    finally:
        await rig.cleanup()
        with contextlib.suppress(Exception):
            await rig.connection.close()


@pytest.fixture
def proxy(shared_rig: Rig) -> Iterator[Proxy]:
    """A TCP proxy to the shared broker for this test's own connections
    (``proxy.url(rig.url)``); it starts passing every byte through."""
    target = URL(shared_rig.url)
    with Proxy(target.host or "127.0.0.1", target.port or 5672) as running:
        yield running
