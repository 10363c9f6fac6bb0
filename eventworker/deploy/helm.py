"""A Helm chart of the Kubernetes manifests: the same documents, with what differs between
environments (image, replicas, resources, Secret, ServiceMonitor, KEDA) turned into values.

The chart is rendered, not written by hand: its templates are the documents of
:func:`eventworker.deploy.kubernetes.render` with every KEDA and Prometheus resource included,
and the fields a release may change replaced by template expressions. With its default values,
``helm template`` gives exactly what ``eventworker deploy kubernetes`` renders with the same
options; everything that comes from the code (queues, commands, probes, the environment,
the drain grace) stays literal, so a chart is rendered again when the handlers change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from eventworker.deploy import kubernetes as k8s
from eventworker.errors import InvalidInputError
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import Settings

#: The first line of every file the chart holds: a folder starting with it is ours to rewrite.
MARKER = "# Rendered by `eventworker deploy kubernetes --format helm`: render it again, don't edit."


@dataclass(frozen=True, slots=True)
class _Template:
    """A field's template expression, and how it replaces the field's line."""

    expression: str
    #: ``scalar``: the value on the field's line; ``block``: a YAML block under the field
    #: (``toYaml``); ``line``: the scalar, with the whole line only when ``condition`` holds.
    shape: str = "scalar"
    condition: str = ""


class _Templates:
    """Placeholders put into the documents, then swapped for their expressions in the text."""

    def __init__(self) -> None:
        self._by_token: dict[str, _Template] = {}

    def __call__(self, expression: str, shape: str = "scalar", condition: str = "") -> str:
        token = f"helm-placeholder-{len(self._by_token)}"
        self._by_token[token] = _Template(expression, shape, condition)
        return token

    def substitute(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            indent, key, template = match["indent"], match["key"], self._by_token[match["token"]]
            if template.shape == "block":
                below = f"toYaml {template.expression} | nindent {len(indent) + 2}"
                return f"{indent}{key}:\n{indent}  {{{{- {below} }}}}"
            line = f"{indent}{key}: {{{{ {template.expression} }}}}"
            if template.shape == "line":
                return f"{{{{- if {template.condition} }}}}\n{line}\n{{{{- end }}}}"
            return line

        return re.sub(
            r"^(?P<indent>[ -]*)(?P<key>[A-Za-z]+): (?P<token>helm-placeholder-\d+)$",
            swap,
            text,
            flags=re.MULTILINE,
        )


def chart(
    routes: Sequence[ResolvedHandler], settings: Settings, options: k8s.Options
) -> dict[str, str]:
    """The chart's files by path (``Chart.yaml``, ``values.yaml``, ``templates/...``)."""
    everything = replace(options, autoscale="keda", service_monitor=True)
    documents = k8s.render(routes, settings, everything)
    templates = _Templates()
    files: dict[str, str] = {}
    for document in documents:
        condition = _templated(document, templates)
        text = templates.substitute(k8s.dump([document]))
        if condition:
            text = f"{{{{- if {condition} }}}}\n{text}{{{{- end }}}}\n"
        name = f"{document['metadata']['name']}-{document['kind'].lower()}.yaml"
        files[f"templates/{name}"] = f"{MARKER}\n{text}"
    files["templates/NOTES.txt"] = _notes(settings, options)
    files["Chart.yaml"] = _chart_yaml(routes, options)
    files["values.yaml"] = _values(settings, options)
    files["values.schema.json"] = json.dumps(_SCHEMA, indent=2) + "\n"
    return dict(sorted(files.items()))


def _templated(document: dict[str, Any], t: _Templates) -> str:
    """Puts ``document``'s release-specific fields as placeholders; returns the condition the
    whole document is rendered under ("" for always)."""
    metadata = document["metadata"]
    document["metadata"] = {"name": metadata.pop("name"), "namespace": t(".Release.Namespace")}
    document["metadata"].update((k, v) for k, v in metadata.items() if k != "namespace")
    for ref in _secret_references(document):
        ref["name"] = t(".Values.secret | quote")
    kind, spec = document["kind"], document["spec"]
    if kind == "Deployment":
        document["spec"] = {
            "replicas": t(".Values.replicas", "line", "not .Values.autoscaling.enabled"),
            **spec,
        }
        container = spec["template"]["spec"]["containers"][0]
        container["image"] = t(".Values.image | quote")
        container["resources"] = t(".Values.resources", "block")
        return ""
    if kind == "ServiceMonitor":
        return ".Values.serviceMonitor.enabled"
    if kind == "TriggerAuthentication":
        for target in spec["secretTargetRef"]:
            target["key"] = t(".Values.autoscaling.hostKey | quote")
        return ".Values.autoscaling.enabled"
    if kind == "ScaledObject":
        spec["minReplicaCount"] = t(".Values.autoscaling.minReplicas")
        spec["maxReplicaCount"] = t(".Values.autoscaling.maxReplicas")
        spec["cooldownPeriod"] = t(".Values.autoscaling.cooldown")
        spec["pollingInterval"] = t(".Values.autoscaling.pollingInterval")
        for trigger in spec["triggers"]:
            trigger["metadata"]["value"] = t(".Values.autoscaling.queueLength | toString | quote")
        return ".Values.autoscaling.enabled"
    return ""


def _secret_references(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``secretKeyRef`` and KEDA ``secretTargetRef`` entry under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "secretKeyRef":
                yield value
            elif key == "secretTargetRef":
                yield from value
            else:
                yield from _secret_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_references(item)


def _chart_yaml(routes: Sequence[ResolvedHandler], options: k8s.Options) -> str:
    tag = options.image.rpartition(":")[2] if ":" in options.image.rpartition("/")[2] else ""
    handlers = ", ".join(sorted(r.handler.name for r in routes))
    lines = [
        MARKER,
        "apiVersion: v2",
        f"name: {k8s.dns_name(options.name)}",
        f"description: {json.dumps(f'eventworker workers for the handlers {handlers}')}",
        "type: application",
        # The chart changes when eventworker or the handlers do; its version follows
        # eventworker's, and appVersion the image's tag.
        f"version: {json.dumps(_semver(version('eventworker')))}",
    ]
    if tag:
        lines.append(f"appVersion: {json.dumps(tag)}")
    return "\n".join(lines) + "\n"


def _semver(text: str) -> str:
    """A SemVer 2 version Helm accepts for a Python version (``0.1.0``, ``1.2.0-dev3``)."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)", text)
    if match is None:
        return "0.0.0"
    major, minor, patch, rest = match.groups()
    suffix = re.sub(r"[^0-9A-Za-z.-]", "", rest.lstrip(".+-"))
    return f"{major}.{minor or 0}.{patch or 0}" + (f"-{suffix}" if suffix else "")


def _values(settings: Settings, options: k8s.Options) -> str:
    """``values.yaml``: the options the chart was rendered with, each explained."""

    def v(value: Any) -> str:
        return json.dumps(value)

    keys = _secret_keys(settings, options)
    resources = json.dumps(options.resources())
    return f"""{MARKER}
# The image with eventworker and the plugins the chart was rendered from.
image: {v(options.image)}
# Pods per Deployment while autoscaling is off.
replicas: {options.replicas}
# The Secret the workers read the broker URL and the other secret settings from; keys: {keys}
# (the KEDA key only with autoscaling).
secret: {v(options.secret)}
# The worker container's requests and limits.
resources: {resources}
# A Prometheus-operator ServiceMonitor per Deployment.
serviceMonitor:
  enabled: {v(options.service_monitor)}
# KEDA scaling on the work queues' ready messages (a ScaledObject per Deployment).
autoscaling:
  enabled: {v(options.autoscale == "keda")}
  # Ready messages per replica KEDA aims for, per work queue.
  queueLength: {options.queue_length}
  minReplicas: {options.min_replicas}
  maxReplicas: {options.max_replicas}
  # Seconds after the last message before scaling to zero (minReplicas 0).
  cooldown: {options.cooldown}
  pollingInterval: {options.polling_interval}
  # The Secret's key holding one AMQP URL for KEDA.
  hostKey: {v(options.keda_host_key)}
"""


def _secret_keys(settings: Settings, options: k8s.Options) -> str:
    """The Secret's keys the chart may read: with autoscaling, KEDA's too."""
    return ", ".join(k8s.secret_keys(settings, replace(options, autoscale="keda")))


def _notes(settings: Settings, options: k8s.Options) -> str:
    keys = _secret_keys(settings, options)
    return (
        "eventworker workers of release {{ .Release.Name }} in {{ .Release.Namespace }}.\n"
        "The Secret {{ .Values.secret }} must hold the keys: "
        f"{keys} (the KEDA key only with autoscaling).\n"
    )


_POSITIVE = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_QUANTITY = {"type": ["string", "number"]}
_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["image", "replicas", "secret", "resources", "serviceMonitor", "autoscaling"],
    "properties": {
        "image": {"type": "string", "minLength": 1, "pattern": r"^\S+$"},
        "replicas": _COUNT,
        "secret": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                kind: {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"cpu": _QUANTITY, "memory": _QUANTITY},
                }
                for kind in ("requests", "limits")
            },
        },
        "serviceMonitor": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean"}},
        },
        "autoscaling": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "queueLength": _POSITIVE,
                "minReplicas": _COUNT,
                "maxReplicas": _POSITIVE,
                "cooldown": _COUNT,
                "pollingInterval": _POSITIVE,
                "hostKey": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"},
            },
        },
    },
}


def write(folder: Path, files: dict[str, str], note: Callable[[str], None]) -> None:
    """Writes the chart into ``folder``: a new or empty one, or one this command wrote before
    (its templates no longer rendered are removed, each named through ``note``).

    Raises:
        InvalidInputError: ``folder`` holds something else.
    """
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"--out {folder}: not a folder")
    chart_file = folder / "Chart.yaml"
    ours = chart_file.is_file() and chart_file.read_text().startswith(MARKER)
    if folder.exists() and any(folder.iterdir()) and not ours:
        raise InvalidInputError(
            f"--out {folder}: the folder holds something else than a chart this command "
            "rendered; give an empty or new folder"
        )
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for stale in sorted((folder / "templates").iterdir()):
        if f"templates/{stale.name}" not in files and stale.is_file():
            stale.unlink()
            note(f"removed {stale} (a handler removed since?)")
    for path, text in files.items():
        (folder / path).write_text(text)
