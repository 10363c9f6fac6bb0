"""``eventworker asyncapi``: the event catalogue of installed handlers, validated against the
official AsyncAPI 3.0 JSON Schema (npm's ``@asyncapi/specs``, pinned in tests/plugins/asyncapi)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventworker import Event, handler
from tests.support.distributions import install

EVENTWORKER = str(Path(sys.executable).with_name("eventworker"))
SPECS = Path(__file__).parent / "asyncapi" / "node_modules" / "@asyncapi" / "specs" / "schemas"
#: The bundle whose references are all local (#/definitions/...): it validates offline.
SCHEMA = SPECS / "3.0.0-without-$id.json"

PLUGIN = '''
"""Orders, for the catalogue."""
from pydantic import BaseModel

from eventworker import Context, Event, RetryPolicy, handler


class Line(BaseModel):
    sku: str
    quantity: int


class OrderPlaced(BaseModel):
    """An order as the shop took it."""

    order_id: str
    lines: list[Line]


class OrderBilled(BaseModel):
    order_id: str
    amount_cents: int


@handler(
    "orders.placed",
    "orders.*.placed",
    retry=RetryPolicy(max_attempts=3, delays=(2, 30)),
    publishes=[("orders.billed", OrderBilled), "audit.orders"],
)
async def bill(event: Event[OrderPlaced], ctx: Context) -> None:
    """Bill a placed order."""


@handler("orders.billed", publishes=["mail.#"], queue="acme.mailer")
async def mail(event: Event[OrderBilled], ctx: Context) -> None:
    pass


@handler("misc.#")
def anything(event, ctx):
    pass
'''


def _why_no_schema() -> str | None:
    if not SCHEMA.is_file():
        return (
            "needs the AsyncAPI JSON Schemas: npm ci --prefix tests/plugins/asyncapi "
            "(scripts/test.sh does it where npm is installed)"
        )
    return None


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    install(
        site,
        distribution="acme-orders",
        entry_points={"eventworker.handlers": "orders = acme_orders"},
        files={"acme_orders.py": PLUGIN},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                [*extra.pop("pythonpath", "").split(os.pathsep), str(site)]
            ),
            "EVENTWORKER_PLUGINS": "orders",
            "EVENTWORKER_URL": "amqp://app:s3cret-pw@rabbit.example:5673/shop",
            "EVENTWORKER_EXCHANGE": "acme.events",
            "EVENTWORKER_QUEUE_PREFIX": "acme.",
            **extra,
        }
    )
    return env


def _asyncapi(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVENTWORKER, "asyncapi", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        timeout=60,
    )


def _validate(doc: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{e.json_path}: {e.message[:300]}" for e in errors[:10])


@pytest.mark.skipif(_why_no_schema() is not None, reason=_why_no_schema() or "")
def test_the_document_is_valid_asyncapi_3_and_describes_queues_retries_and_payloads(
    tmp_path: Path,
) -> None:
    result = _asyncapi(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout and "app:" not in result.stdout
    doc = json.loads(result.stdout)
    _validate(doc)

    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["broker"] == {
        "host": "rabbit.example:5673",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "pathname": "/shop",
    }
    assert doc["x-eventworker-exchange"]["name"] == "acme.events"
    assert doc["x-eventworker-exchange"]["returnExchange"] == "acme.events.return"

    # Each handler: its work queue as a channel, its dead-letter queue as another.
    work = doc["channels"]["acme.bill"]
    assert work["bindings"]["amqp"]["is"] == "queue"
    assert work["bindings"]["amqp"]["queue"]["vhost"] == "shop"
    assert work["x-eventworker-binding-keys"] == ["orders.placed", "orders.*.placed"]
    assert work["x-eventworker-dead-letter-queue"] == "acme.bill.dead"
    assert doc["channels"]["acme.bill.dead"]["address"] == "acme.bill.dead"
    assert doc["channels"]["acme.mailer"]["x-eventworker-dead-letter-queue"] == "acme.mailer.dead"

    bill = doc["operations"]["bill"]
    assert bill["action"] == "receive"
    assert bill["channel"] == {"$ref": "#/channels/acme.bill"}
    assert bill["summary"] == "Bill a placed order."
    assert bill["messages"] == [{"$ref": "#/channels/acme.bill/messages/OrderPlaced"}]
    assert bill["x-eventworker-retry"]["maxAttempts"] == 3
    assert bill["x-eventworker-retry"]["delays"] == [2.0, 30.0]
    assert bill["x-eventworker-retry"]["retryQueues"] == ["acme.retry.2s", "acme.retry.30s"]
    assert bill["x-eventworker-dead-letter-channel"] == {"$ref": "#/channels/acme.bill.dead"}

    # Payloads: the models' JSON Schemas, nested models among the components.
    schemas = doc["components"]["schemas"]
    assert schemas["OrderPlaced"]["properties"]["lines"]["items"] == {
        "$ref": "#/components/schemas/Line"
    }
    assert schemas["Line"]["required"] == ["sku", "quantity"]
    placed = doc["components"]["messages"]["OrderPlaced"]
    assert placed["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    assert placed["contentType"] == "application/json"
    assert placed["summary"] == "An order as the shop took it."
    assert doc["channels"]["acme.anything"]["messages"] == {
        "AnyEvent": {"$ref": "#/components/messages/AnyEvent"}
    }

    # What the handlers declare they publish: channels on the exchange, send operations.
    billed = doc["channels"]["orders.billed"]
    assert billed["address"] == "orders.billed"
    assert billed["bindings"]["amqp"]["is"] == "routingKey"
    assert billed["bindings"]["amqp"]["exchange"]["name"] == "acme.events"
    assert billed["bindings"]["amqp"]["exchange"]["type"] == "topic"
    assert billed["messages"] == {"OrderBilled": {"$ref": "#/components/messages/OrderBilled"}}
    sends = {k: v for k, v in doc["operations"].items() if v["action"] == "send"}
    assert {v["channel"]["$ref"] for v in sends.values()} == {
        "#/channels/orders.billed",
        "#/channels/audit.orders",
        "#/channels/mail._",
    }
    assert doc["channels"]["mail._"]["address"] == "mail.#"


@pytest.mark.skipif(_why_no_schema() is not None, reason=_why_no_schema() or "")
def test_yaml_to_a_file_is_the_same_document(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "asyncapi.yaml"
    result = _asyncapi(tmp_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    doc = yaml.safe_load(out.read_text())
    _validate(doc)
    as_json = json.loads(_asyncapi(tmp_path, "--format", "json").stdout)
    assert doc == as_json


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "noyaml"
    blocker.mkdir()
    (blocker / "yaml.py").write_text("raise ImportError('No module named yaml')\n")
    result = _asyncapi(tmp_path, "--format", "yaml", pythonpath=str(blocker))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --format yaml needs PyYAML")
    assert result.stdout == ""


def test_an_unwritable_out_file_is_a_clear_error(tmp_path: Path) -> None:
    result = _asyncapi(tmp_path, "--out", str(tmp_path / "missing" / "doc.json"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot write ")


def test_publishes_takes_routing_keys_and_models() -> None:
    from pydantic import BaseModel

    class Shipped(BaseModel):
        order_id: str

    @handler("orders.paid", publishes=["orders.shipped.#", ("orders.shipped", Shipped)])
    async def ship(event: Event[Any], ctx: Any) -> None:
        pass

    assert ship.publishes == (("orders.shipped.#", None), ("orders.shipped", Shipped))
    for bad, message in [
        ("orders.shipped", "must list routing keys"),
        ([("orders.x", dict)], "expected a routing key or a"),
        ([("orders.x",)], "expected a routing key or a"),
        (["orders..x"], "publishes: binding key 'orders..x' has an empty word"),
        (["a.b", "a.b"], "lists 'a.b' twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            handler("orders.paid", publishes=bad)  # type: ignore[arg-type]
