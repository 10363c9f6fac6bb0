"""``eventworker deploy kubernetes``: the manifests validate against the Kubernetes and KEDA
schemas, and agree with what ``eventworker run`` and ``eventworker handlers`` do.

The core resources are checked with kubernetes-validate (its bundled API schemas, offline);
ScaledObject, TriggerAuthentication and ServiceMonitor with the validators npm's
``@kubernetes-models/keda`` and ``@kubernetes-models/prometheus-operator`` generate from the
CRD schemas of KEDA and of the Prometheus operator (pinned in tests/deploy, installed by
scripts/bootstrap.sh).
``EVENTWORKER_TEST_REGENERATE_GOLDEN=1`` rewrites the golden files under tests/deploy/golden.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from eventworker.deploy import kubernetes as k8s
from eventworker.errors import InvalidInputError
from eventworker.plugins import discovery
from eventworker.plugins.resolved import ResolvedHandler, resolve
from eventworker.settings import Settings, load_settings
from tests.support.broker import Broker
from tests.support.cli import CANARY, EVENTWORKER
from tests.support.ingress import free_port
from tests.support.kubernetes import (
    CUSTOM_KINDS,
    KUBERNETES_VERSION,
    SHAPES,
    clean_env,
    deploy,
    documents,
)

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
NODE_MODELS = [
    HERE / "node_modules" / "@kubernetes-models" / name for name in ("keda", "prometheus-operator")
]


def _example_routes(settings: Settings) -> list[ResolvedHandler]:
    return resolve(discovery.discover(plugins=settings.plugins, names=settings.handlers), settings)


#: The example plugin's handlers, resolved with the default settings.
_ROUTES = _example_routes(Settings())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_core_resource_validates_against_the_kubernetes_schemas(
    shape: str, cwd: Path
) -> None:
    result = deploy(*SHAPES[shape], cwd=cwd)
    assert result.returncode == 0, result.stderr
    core = [d for d in documents(result.stdout) if d["kind"] not in CUSTOM_KINDS]
    assert {d["kind"] for d in core} == {"Deployment", "Service", "PodDisruptionBudget"}
    for document in core:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_an_invalid_resource_is_caught_by_the_validator() -> None:
    """The check above can fail: a Deployment without its selector does not pass."""
    settings = Settings()
    document = k8s.render(_example_routes(settings), settings, k8s.Options(image="x"))[0]
    del document["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _validate_custom(documents: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(HERE / "validate_crds.mjs")],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=60,
    )


@pytest.fixture
def crd_models() -> None:
    if shutil.which("node") is None:
        pytest.skip("needs Node.js to run the CRD validators (apt-get install nodejs npm)")
    for folder in NODE_MODELS:
        if not folder.is_dir():
            pytest.skip(
                f"needs @kubernetes-models/{folder.name}: npm ci --prefix tests/deploy "
                "(scripts/test.sh does it where npm is installed)"
            )


def test_keda_and_prometheus_resources_validate_against_their_crd_schemas(
    crd_models: None, cwd: Path
) -> None:
    result = deploy(*SHAPES["split-keda"], cwd=cwd)
    assert result.returncode == 0, result.stderr
    custom = [d for d in documents(result.stdout) if d["kind"] in CUSTOM_KINDS]
    assert {d["kind"] for d in custom} == CUSTOM_KINDS
    checked = _validate_custom(custom)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("ok ") == len(custom)
    # And the validators do reject what the operators would: a trigger value that is not a
    # string, an endpoint port that is a number.
    scaled = json.loads(json.dumps(next(d for d in custom if d["kind"] == "ScaledObject")))
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 5
    monitor = json.loads(json.dumps(next(d for d in custom if d["kind"] == "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["port"] = 9100
    for broken in (scaled, monitor):
        assert _validate_custom([broken]).returncode == 1


def test_keda_triggers_name_exactly_the_work_queues_of_eventworker_handlers(cwd: Path) -> None:
    listed = subprocess.run(
        [EVENTWORKER, "handlers", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=cwd,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    for split in ("none", "handler"):
        result = deploy("--split", split, "--autoscale", "keda", cwd=cwd)
        assert result.returncode == 0, result.stderr
        rendered = documents(result.stdout)
        triggers = [
            t for d in rendered if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]
        ]
        assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(
            r["queue"] for r in rows
        )
        dead = {r["dead_letter_queue"] for r in rows}
        assert not dead & {t["metadata"]["queueName"] for t in triggers}
        assert not any(".retry." in t["metadata"]["queueName"] for t in triggers)
        if split == "handler":
            # Each Deployment runs one handler and scales on that handler's queue alone.
            for d in rendered:
                if d["kind"] != "ScaledObject":
                    continue
                deployment = next(
                    x
                    for x in rendered
                    if x["kind"] == "Deployment" and x["metadata"]["name"] == d["metadata"]["name"]
                )
                command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
                name = command[command.index("--handler") + 1]
                (row,) = [r for r in rows if r["name"] == name]
                assert [t["metadata"]["queueName"] for t in d["spec"]["triggers"]] == [row["queue"]]


def _container(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return container


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_probes_answer_on_a_worker_run_with_the_rendered_settings(
    settings: Settings, broker: Broker
) -> None:
    """A worker started with the container's command and environment (the Secret's URL being
    the test broker's) answers the readiness and liveness probes at the container port."""
    port = free_port()
    pinned = load_settings(
        url=settings.url.get_secret_value(),
        exchange=settings.exchange,
        queue_prefix=settings.queue_prefix,
        metrics_port=port,
        grace=2.0,
        handlers=("greet",),
    )
    broker.track_installed("greet")
    deployment = k8s.render(_example_routes(pinned), pinned, k8s.Options(image="x"))[0]
    container = _container(deployment)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWORKER_")}
    for variable in container["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"]["secretKeyRef"]["key"] == "url"
            env[variable["name"]] = settings.url.get_secret_value()
        else:
            env[variable["name"]] = variable["value"]
    (container_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert container_port == port
    command = container["command"]
    assert command[:2] == ["eventworker", "run"]
    process = subprocess.Popen(
        [EVENTWORKER, *command[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        statuses: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                statuses = {
                    probe: _get(
                        f"http://127.0.0.1:{container_port}{container[probe]['httpGet']['path']}"
                    )
                    for probe in ("readinessProbe", "livenessProbe")
                }
            except OSError:
                statuses = {}
            if statuses.get("readinessProbe") == 200:
                break
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.2)
        assert statuses == {"readinessProbe": 200, "livenessProbe": 200}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


@hypothesis_settings(max_examples=200, deadline=None)
@given(grace=st.floats(min_value=0, max_value=10**7, allow_nan=False, allow_infinity=False))
def test_the_pod_outlives_the_drain_for_any_grace(grace: float) -> None:
    settings = Settings(grace=grace)
    for document in k8s.render(_ROUTES, settings, k8s.Options(image="x", split="handler")):
        if document["kind"] != "Deployment":
            continue
        seconds = document["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert isinstance(seconds, int)
        assert seconds >= grace + k8s.GRACE_MARGIN
        assert seconds < math.ceil(grace) + k8s.GRACE_MARGIN + 1


def _rebound(routes: list[ResolvedHandler], name: str, *keys: str) -> list[ResolvedHandler]:
    return [
        dataclasses.replace(r, handler=dataclasses.replace(r.handler, bindings=keys))
        if r.handler.name == name
        else r
        for r in routes
    ]


@pytest.mark.parametrize("split", ["none", "handler"])
def test_a_handler_s_bindings_change_its_deployment_and_nothing_else(split: str) -> None:
    settings = Settings()
    options = k8s.Options(image="x", split=split, autoscale="keda", service_monitor=True)  # type: ignore[arg-type]
    before = k8s.render(_ROUTES, settings, options)
    after = k8s.render(_rebound(_ROUTES, "greet", "demo.greet", "demo.hello"), settings, options)
    changed = [
        (b["kind"], b["metadata"]["name"]) for b, a in zip(before, after, strict=True) if a != b
    ]
    expected = "eventworker" if split == "none" else "eventworker-greet"
    assert changed == [("Deployment", expected)]
    assert k8s.render(_ROUTES, settings, options) == before


def test_a_single_active_consumer_is_not_scaled() -> None:
    """One consumer at a time whatever the replicas: its queue gets no trigger, and its own
    Deployment no ScaledObject."""
    routes = [
        dataclasses.replace(r, handler=dataclasses.replace(r.handler, single_active_consumer=True))
        if r.handler.name == "slow"
        else r
        for r in _ROUTES
    ]
    for split in ("none", "handler"):
        options = k8s.Options(image="x", split=split, autoscale="keda")  # type: ignore[arg-type]
        documents = k8s.render(routes, Settings(), options)
        scaled = [d for d in documents if d["kind"] == "ScaledObject"]
        queues = [t["metadata"]["queueName"] for d in scaled for t in d["spec"]["triggers"]]
        assert "eventworker.slow" not in queues
        assert len(queues) == len(routes) - 1
        names = {d["metadata"]["name"] for d in scaled}
        assert ("eventworker-slow" in names) is False
        assert any(
            d["kind"] == "Deployment" and d["metadata"]["name"] == "eventworker-slow"
            for d in documents
        ) == (split == "handler")


def test_what_is_not_the_topology_or_a_setting_changes_nothing(cwd: Path) -> None:
    """The broker's URL (a secret), the handlers' code and the order of rendering leave the
    output as it was, byte for byte."""
    first = deploy("--autoscale", "keda", cwd=cwd)
    second = deploy("--autoscale", "keda", cwd=cwd, EVENTWORKER_URL=f"amqp://u:{CANARY}@elsewhere/")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert CANARY not in second.stdout + second.stderr
    settings = Settings()
    swapped = [
        dataclasses.replace(r, handler=dataclasses.replace(r.handler, func=lambda e, c: None))
        for r in _ROUTES
    ]
    options = k8s.Options(image="x")
    assert k8s.render(swapped, settings, options) == k8s.render(_ROUTES, settings, options)


def test_settings_reach_the_pod_as_the_worker_reads_them(cwd: Path) -> None:
    """Every setting that differs from its default is in the environment, secret ones by
    reference; the worker loading that environment (with the Secret's values) gets the same
    settings back."""
    secret_values = {
        "url": f"amqp://app:{CANARY}@rabbit-1/,amqp://app:{CANARY}@rabbit-2/",
        "inbox-url": f"postgresql://app:{CANARY}@db/inbox",
    }
    configured = {
        "EVENTWORKER_URL": secret_values["url"],
        "EVENTWORKER_INBOX__URL": secret_values["inbox-url"],
        "EVENTWORKER_INBOX__IDEMPOTENT": "true",
        "EVENTWORKER_GRACE": "42.5",
        "EVENTWORKER_CONCURRENCY": "3",
        "EVENTWORKER_QUEUE_TYPE": "classic",
        "EVENTWORKER_LOG_FORMAT": "json",
        "EVENTWORKER_METRICS_PORT": "9200",
        "EVENTWORKER_PLUGINS": "demo,audit",
        "EVENTWORKER_RETRY__DELAYS": "[2, 20]",
        "EVENTWORKER_RETRY_OVERRIDES": '{"flaky": {"max_attempts": 2, "delays": [5]}}',
        "EVENTWORKER_HTTP__ALLOWED_KEYS": '["orders.#"]',
    }
    result = deploy(cwd=cwd, **configured)
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert "keys: inbox-url, url" in result.stderr
    (deployment,) = [d for d in documents(result.stdout) if d["kind"] == "Deployment"]
    container = _container(deployment)
    assert container["ports"][0]["containerPort"] == 9200
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 58
    pod_env: dict[str, str] = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"]["secretKeyRef"]["name"] == "eventworker-broker"
            pod_env[variable["name"]] = secret_values[variable["valueFrom"]["secretKeyRef"]["key"]]
        else:
            pod_env[variable["name"]] = variable["value"]
    rendered = subprocess.run(
        [
            sys.executable,
            "-c",
            "from eventworker.settings import load_settings; "
            "print(load_settings().model_dump_json())",
        ],
        capture_output=True,
        text=True,
        env=clean_env(**pod_env),
        cwd=cwd,
        timeout=60,
        check=True,
    )
    original = subprocess.run(
        [
            sys.executable,
            "-c",
            "from eventworker.settings import load_settings; "
            "print(load_settings().model_dump_json())",
        ],
        capture_output=True,
        text=True,
        env=clean_env(**configured),
        cwd=cwd,
        timeout=60,
        check=True,
    )
    assert json.loads(rendered.stdout) == json.loads(original.stdout)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_rendered_example_matches_its_golden_file(shape: str, cwd: Path) -> None:
    result = deploy(*SHAPES[shape], cwd=cwd)
    assert result.returncode == 0, result.stderr
    golden = GOLDEN / f"{shape}.yaml"
    if os.environ.get("EVENTWORKER_TEST_REGENERATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text(), (
        "the manifests changed; if on purpose, rewrite the golden files: "
        f"EVENTWORKER_TEST_REGENERATE_GOLDEN=1 pytest {__file__}"
    )


def test_out_dir_writes_the_same_documents_one_file_per_deployment(cwd: Path) -> None:
    stream = deploy(*SHAPES["split-keda"], cwd=cwd)
    written = deploy(*SHAPES["split-keda"], "--out", str(cwd / "k8s"), cwd=cwd)
    assert stream.returncode == written.returncode == 0, written.stderr
    assert written.stdout == ""
    files = sorted((cwd / "k8s").iterdir())
    assert "keda-trigger-authentication.yaml" in {f.name for f in files}
    assert "eventworker-greet.yaml" in {f.name for f in files}
    from_files = [d for f in files for d in documents(f.read_text())]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(from_files, key=key) == sorted(documents(stream.stdout), key=key)


def test_out_dir_points_at_files_this_run_did_not_write(cwd: Path) -> None:
    folder = cwd / "k8s"
    folder.mkdir()
    (folder / "eventworker-removed.yaml").write_text("kind: Deployment\n")
    result = deploy("--split", "handler", "--out", str(folder), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert f"note: {folder / 'eventworker-removed.yaml'} was not written by this run" in (
        result.stderr
    )
    assert "eventworker-greet.yaml" not in result.stderr


def test_kubernetes_names_are_valid_short_and_distinct() -> None:
    long_a, long_b = "a" * 80 + "_one", "a" * 80 + "_two"
    names = [k8s.dns_name("eventworker", n) for n in ("send_welcome", "9lives", long_a, long_b)]
    assert names[0] == "eventworker-send-welcome"
    assert all(len(n) <= 63 and n[0].isalpha() and n[-1].isalnum() for n in names)
    assert len(set(names)) == len(names)
    assert k8s.dns_name("9lives") == "w-9lives"


def test_two_handlers_making_one_kubernetes_name_are_refused() -> None:
    routes = [
        dataclasses.replace(r, handler=dataclasses.replace(r.handler, name="send-welcome"))
        if r.handler.name == "greet"
        else r
        for r in _ROUTES
    ]
    with pytest.raises(InvalidInputError, match="'eventworker-send-welcome'"):
        k8s.render(routes, Settings(), k8s.Options(image="x", split="handler"))
    assert k8s.render(routes, Settings(), k8s.Options(image="x"))


def test_idempotent_handlers_on_a_pod_local_inbox_get_a_note(cwd: Path) -> None:
    local = deploy(cwd=cwd, EVENTWORKER_INBOX__IDEMPOTENT="true")
    shared = deploy(
        cwd=cwd,
        EVENTWORKER_INBOX__IDEMPOTENT="true",
        EVENTWORKER_INBOX__URL=f"redis://:{CANARY}@redis:6379/0",
    )
    plain = deploy(cwd=cwd)
    assert local.returncode == shared.returncode == plain.returncode == 0
    assert "note: idempotent handlers (audit_orders, bill_order," in local.stderr
    assert "note: idempotent" not in shared.stderr + plain.stderr
    assert CANARY not in shared.stdout + shared.stderr


def test_without_pyyaml_the_error_says_how_to_get_it(cwd: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['yaml'] = None\n"
        "from eventworker.cli import main\n"
        "main(['deploy', 'kubernetes', '--image', 'x'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), cwd=cwd
    )
    assert result.returncode != 0
    assert "error: rendering manifests needs PyYAML" in result.stderr
    assert "eventworker[deploy]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--handler", "nope"], {}, "nope"),
        (
            ["--autoscale", "keda", "--min-replicas", "5", "--max-replicas", "2"],
            {},
            "min_replicas 5 (--min-replicas, kubernetes.min_replicas) is above max_replicas 2",
        ),
        ([], {"EVENTWORKER_METRICS_HOST": "127.0.0.1"}, "metrics_host = 127.0.0.1"),
        (["--namespace", "Jobs_Prod"], {}, "--namespace 'Jobs_Prod'"),
        (["--secret", "broker secret"], {}, "--secret 'broker secret'"),
    ],
)
def test_bad_input_is_one_error_line(
    args: list[str], extra: dict[str, str], message: str, cwd: Path
) -> None:
    result = deploy(*args, cwd=cwd, **extra)
    assert result.returncode != 0
    assert result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert result.stdout == ""
