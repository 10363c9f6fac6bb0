"""The console against the real broker: its listings are what `eventworker dlq` reports, its
actions move exactly what was asked, GET changes nothing, and no form works without its CSRF
token."""

from __future__ import annotations

import asyncio
import html
import signal

import aio_pika
import httpx
import orjson
import pytest

from eventworker.console.auth import TOKEN_COOKIE, check_bind
from eventworker.deadletters import operations
from eventworker.errors import ConfigError, ExitCode
from eventworker.settings import ConsoleSettings, Settings
from tests.support.broker import Broker
from tests.support.cli import EVENTWORKER, cli, env_for
from tests.support.console import console_client, post
from tests.support.deadletters import IDS, declare, fill_dead_letters, ids_in, target
from tests.support.private_node import free_port
from tests.support.raw_amqp import RawClient, properties, shortstr


async def test_listing_and_one_letter_match_what_dlq_show_reports(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS, **{"x-eventworker-traceback": "Boom at line 3"})
    shown = await operations.show(broker.connection, dlq, limit=100, preview_chars=80)
    async with console_client(settings, target) as client:
        page = (await client.get("/handlers/target")).text
        listed = [i for i in IDS if f">{i}</a>" in page]
        assert listed == [p.id for p in shown]
        assert f'id="dead-count">{len(IDS)}<' in page
        await broker.wait_count(dlq.queue, len(IDS))
        one = (await client.get("/handlers/target/letter", params={"id": "m3"})).text
        await broker.wait_count(dlq.queue, len(IDS))
        assert "Boom at line 3" in one and "dlq.event" in one and "exception" in one
        overview = (await client.get("/")).text
        assert 'data-handler="target"' in overview and "schema_error 5" in overview
        # A quorum queue takes back what a read held a moment after the read ended.
        await broker.wait_count(dlq.queue, len(IDS))
        by_reason = (await client.get("/handlers/target", params={"reason": "exception"})).text
        assert [i for i in IDS if f">{i}</a>" in by_reason] == [
            p.id for p in shown if p.reason == "exception"
        ]
    assert await ids_in(broker, dlq.queue) == IDS  # every GET left the queue as it was


async def test_replay_selected_moves_exactly_those_and_purge_filtered_deletes_exactly_those(
    broker: Broker, settings: Settings, log_lines: list[str]
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS)
    async with console_client(settings, target) as client:
        confirm = await post(
            client, "/handlers/target/confirm", do="replay:selected", ids=["m2", "m5"]
        )
        assert confirm.status_code == 200 and "m2" in confirm.text and "Yes, replay" in confirm.text
        await broker.wait_count(dlq.queue, len(IDS))  # the confirmation step moved nothing
        done = await post(
            client, "/handlers/target/replay", scope="selected", ids=["m2", "m5"], confirmed="yes"
        )
        assert done.status_code == 303
        await _finished(client, done.headers["location"])
        await broker.wait_count(dlq.queue, 8)
        back = await broker.take_all(dlq.return_to or "", expect=2)
        assert [m.message_id for m in back] == ["m2", "m5"]
        purge = await post(
            client,
            "/handlers/target/confirm",
            do="purge:filtered",
            reason="exception",
        )
        odd = [i for n, i in enumerate(IDS) if n % 2 and i != "m5"]
        assert all(i in purge.text for i in odd)
        done = await post(
            client, "/handlers/target/purge", scope="filtered", ids=odd, confirmed="yes"
        )
        await _finished(client, done.headers["location"])
    assert await ids_in(broker, dlq.queue) == [i for i in IDS if i not in {"m2", "m5", *odd}]
    assert any("console audit: local started replay" in line for line in log_lines)


async def _finished(client: object, location: str) -> None:
    for _ in range(200):
        text = (await client.get(location)).text  # type: ignore[attr-defined]
        if 'id="job-state">done' in text:
            return
        assert "failed" not in text
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {location} never finished")


async def test_export_downloads_every_letter_and_leaves_them(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS)
    async with console_client(settings, target, allow_actions=False) as client:
        response = await post(client, "/handlers/target/export")
    records = [orjson.loads(line) for line in response.content.splitlines()]
    assert [r["properties"]["message_id"] for r in records] == IDS
    assert response.headers["content-type"] == "application/x-ndjson"
    assert await ids_in(broker, dlq.queue) == IDS


async def test_forms_without_csrf_token_or_operator_role_are_refused(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    await fill_dead_letters(broker, dlq.queue, IDS[:3])
    async with console_client(settings, target) as client:
        await client.get("/")
        fields = {"scope": "all", "confirmed": "yes"}
        assert (await client.post("/handlers/target/replay", data=fields)).status_code == 403
        wrong = {**fields, "csrf": "forged"}
        assert (await client.post("/handlers/target/replay", data=wrong)).status_code == 403
        assert (await client.get("/handlers/target/replay")).status_code == 405
    async with console_client(settings, target, allow_actions=False) as client:
        refused = await post(client, "/handlers/target/replay", **fields)
        assert refused.status_code == 403 and "read-only" in refused.text
        # Another site's name resolving to this machine (DNS rebinding) gets nothing.
        rebound = await client.get("/", headers={"host": "evil.example:8025"})
        assert rebound.status_code == 400
    assert await ids_in(broker, dlq.queue) == IDS[:3]


async def test_a_hostile_body_is_shown_as_text_and_every_page_sends_a_csp(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    channel = await broker.connection.channel()
    hostile = b'<script>alert("x")</script>'
    await channel.default_exchange.publish(
        aio_pika.Message(hostile, message_id="<img src=x onerror=alert(1)>"), dlq.queue
    )
    await channel.close()
    async with console_client(settings, target) as client:
        listing = await client.get("/handlers/target")
        one = await client.get(
            "/handlers/target/letter", params={"id": "<img src=x onerror=alert(1)>"}
        )
    for page in (listing, one):
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    assert '<script>alert("x")</script>' in html.unescape(one.text)  # shown, as text


def test_listening_beyond_loopback_needs_authentication() -> None:
    check_bind(ConsoleSettings(), "127.0.0.1")
    with pytest.raises(ConfigError, match="no authentication"):
        check_bind(ConsoleSettings(), "0.0.0.0")
    check_bind(ConsoleSettings(tokens={"alice": "s3cret"}), "0.0.0.0")  # type: ignore[dict-item]
    check_bind(ConsoleSettings(trusted_user_header="X-Forwarded-User"), "0.0.0.0")


async def test_tokens_sign_in_and_name_the_user(broker: Broker, settings: Settings) -> None:
    await declare(broker, settings)
    secured = settings.model_copy(
        update={"console": ConsoleSettings(tokens={"alice": "s3cret"})}  # type: ignore[dict-item]
    )
    async with console_client(secured, target) as client:
        assert (await client.get("/")).status_code == 303
        assert (await post(client, "/login", token="wrong")).status_code == 401
        assert (await post(client, "/login", token="s3cret")).status_code == 303
        assert "alice" in (await client.get("/")).text
        assert "s3cret" not in str(client.cookies)  # the cookie holds a MAC, not the token
        client.cookies.clear()
        client.cookies.set(TOKEN_COOKIE, "alice.forged")
        assert (await client.get("/")).status_code == 303
    async with console_client(secured, target, authorization="Bearer s3cret") as client:
        assert (await client.get("/workers")).status_code == 200


async def test_a_trusted_proxy_header_names_the_user_and_is_required(
    broker: Broker, settings: Settings
) -> None:
    await declare(broker, settings)
    proxied = settings.model_copy(
        update={"console": ConsoleSettings(trusted_user_header="X-Forwarded-User")}
    )
    async with console_client(proxied, target) as client:
        assert (await client.get("/")).status_code == 401
        assert (await post(client, "/handlers/target/export")).status_code == 401
    async with console_client(proxied, target, **{"x-forwarded-user": "bob"}) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "bob · operator" in page.text


async def test_a_message_whose_header_cannot_be_decoded_shows_what_could_be_read(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    raw = await RawClient.open(settings.url.get_secret_value())
    try:
        bad = properties(
            content_type=shortstr(b"application/json\xe9"), message_id=shortstr(b"bad-1")
        )
        await raw.publish("", dlq.return_to or "", b'{"hostile": true}', bad)
        assert await raw.get(dlq.return_to or "", settle="reject") is not None
    finally:
        await raw.close()
    await broker.wait_count(dlq.queue, 1)
    async with console_client(settings, target) as client:
        listing = (await client.get("/handlers/target")).text
        await broker.wait_count(dlq.queue, 1)
        one = (await client.get("/handlers/target/letter", params={"id": "bad-1"})).text
    assert "undecodable" in listing and ">bad-1</a>" in listing
    assert "Undecodable header" in one and "is not UTF-8" in one
    assert "application/json\\xe9" in html.unescape(one)  # what could be read, escaped


async def test_the_console_command_serves_until_sigterm_and_refuses_an_open_bind(
    broker: Broker, settings: Settings
) -> None:
    refused = cli(settings, "console", "--host", "0.0.0.0")
    assert refused.returncode == int(ExitCode.CONFIG), refused.stderr
    assert "no authentication" in refused.stderr
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        EVENTWORKER,
        "console",
        "--port",
        str(port),
        env=env_for(settings),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    page = await http.get(f"http://127.0.0.1:{port}/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the console never answered")
        assert page.status_code == 200 and "Handlers" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert f"console on http://127.0.0.1:{port}/ (read-only)" in err.decode()


async def test_a_test_event_is_published_only_when_allowed(
    broker: Broker, settings: Settings
) -> None:
    dlq = await declare(broker, settings)
    async with console_client(settings, target) as client:
        off = await post(client, "/publish", routing_key="dlq.event", data="{}")
        assert off.status_code == 403
        assert "Publish a test event" not in (await client.get("/catalogue")).text
    allowed = settings.model_copy(
        update={"console": settings.console.model_copy(update={"allow_publish": True})}
    )
    async with console_client(allowed, target) as client:
        assert "Publish a test event" in (await client.get("/catalogue")).text
        bad = await post(client, "/publish", routing_key="dlq.event", data="{nope")
        assert bad.status_code == 400 and "not JSON" in bad.text
        done = await post(client, "/publish", routing_key="dlq.event", data='{"n": 7}')
        assert done.status_code == 200 and "confirmed by the broker" in done.text
    [event] = await broker.take_all(dlq.return_to or "", expect=1)
    assert orjson.loads(event.body) == {"n": 7} and event.routing_key == "dlq.event"


async def test_unrouted_events_are_listed_and_replayed_to_the_exchange(
    broker: Broker, settings: Settings
) -> None:
    unrouted = settings.model_copy(update={"unrouted_queue": f"{settings.queue_prefix}unrouted"})
    await declare(broker, unrouted)
    await broker.publish("nobody.listens", b'{"lost": 1}', message_id="u1")
    await broker.wait_count(unrouted.unrouted_queue, 1)
    async with console_client(unrouted, target) as client:
        overview = (await client.get("/")).text
        assert f'href="/handlers/{unrouted.unrouted_queue}">1</a>' in overview
        listing = (await client.get(f"/handlers/{unrouted.unrouted_queue}")).text
        assert ">u1</a>" in listing and "nobody.listens" in listing and "unrouted" in listing
        await broker.wait_count(unrouted.unrouted_queue, 1)
        # Replayed with its routing key to the exchange: now a binding matches, it is routed.
        channel = await broker.connection.channel()
        listener = (await channel.declare_queue(f"{settings.queue_prefix}listener")).name
        broker._queues.add(listener)  # deleted with the test's other queues
        await (await channel.get_queue(listener)).bind(settings.exchange, "nobody.listens")
        await channel.close()
        done = await post(
            client,
            f"/handlers/{unrouted.unrouted_queue}/replay",
            scope="all",
            confirmed="yes",
        )
        await _finished(client, done.headers["location"])
    [event] = await broker.take_all(listener, expect=1)
    assert event.message_id == "u1" and event.body == b'{"lost": 1}'
    await broker.wait_count(unrouted.unrouted_queue, 0)
