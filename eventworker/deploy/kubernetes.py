"""Kubernetes manifests for a fleet of workers: Deployments, their probes, metrics Services,
PodDisruptionBudgets, and optionally ServiceMonitors and KEDA autoscaling on the work queues.

Pure: the documents are built from the resolved handlers and the settings as plain dicts, in a
fixed order, so that the same input renders the same bytes (:func:`dump` writes them as YAML).
Secrets are never written: the broker URL, and any other secret setting that is set, come from
a Secret by reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from eventworker.errors import InvalidInputError
from eventworker.plugins.resolved import ResolvedHandler
from eventworker.settings import KubernetesSettings, Settings

#: The metrics port the pods use when the settings leave it off (0).
DEFAULT_METRICS_PORT = 9100
#: Seconds the pod gets beyond the drain grace: after the grace the worker waits for cancelled
#: handlers, closes its channels, then its connection, each within 5 s, and the kubelet's
#: SIGKILL must not cut that short.
GRACE_MARGIN = 15
#: Kubernetes names (a Service's is the strictest: an RFC 1035 label) are at most 63 characters.
_NAME_LIMIT = 63
#: Settings that are never rendered: the secrets (referenced from the Secret instead), those
#: the manifests set themselves, and the manifests' own.
_RENDERED_ELSEWHERE = {"url", "metrics_port", "processes", "kubernetes"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class Options:
    """What ``eventworker deploy kubernetes`` renders besides the worker's settings: the image,
    the names, and the ``[kubernetes]`` settings with the command's options over them."""

    image: str
    name: str = "eventworker"
    namespace: str | None = None
    split: Literal["none", "handler"] = "none"
    secret: str = "eventworker-broker"
    replicas: int = 1
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = ""
    memory_limit: str = ""
    service_monitor: bool = False
    autoscale: Literal["none", "keda"] = "none"
    queue_length: int = 100
    min_replicas: int = 1
    max_replicas: int = 10
    cooldown: int = 300
    polling_interval: int = 15
    #: The Secret's key KEDA reads the broker's AMQP URL from (one URL, not a list).
    keda_host_key: str = "url"

    @classmethod
    def from_settings(
        cls,
        settings: KubernetesSettings,
        *,
        image: str,
        name: str,
        namespace: str | None,
        **overrides: Any,
    ) -> Options:
        """The ``[kubernetes]`` settings, each overridden by an option that is not None."""
        values = settings.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(image=image, name=name, namespace=namespace, **values)

    def resources(self) -> dict[str, dict[str, str]]:
        """The container's ``resources``: the requests and limits that are set."""
        result: dict[str, dict[str, str]] = {}
        for kind, cpu, memory in (
            ("requests", self.cpu_request, self.memory_request),
            ("limits", self.cpu_limit, self.memory_limit),
        ):
            quantities = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
            if quantities:
                result[kind] = quantities
        return result


#: A Kubernetes object name (RFC 1123 subdomain) and label (a namespace's).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: A Secret's key.
_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _check_names(options: Options) -> None:
    """Raises InvalidInputError for a name Kubernetes would refuse, before anything is written."""
    name = "lower-case letters, digits and '-'"
    checks = [
        ("--namespace", options.namespace, _LABEL, 63, name),
        ("--secret", options.secret, _SUBDOMAIN, 253, f"{name}, dots between"),
        ("--keda-host-key", options.keda_host_key, _KEY, 253, "letters, digits, '-', '_', '.'"),
    ]
    for option, value, pattern, limit, allowed in checks:
        if value is not None and (len(value) > limit or not pattern.fullmatch(value)):
            raise InvalidInputError(
                f"{option} {value!r} is not a name Kubernetes accepts ({allowed}, at most "
                f"{limit} characters)"
            )
    if not options.image.strip() or any(c.isspace() for c in options.image):
        raise InvalidInputError(f"--image {options.image!r} is not an image reference")


def metrics_port(settings: Settings) -> int:
    """The port of /metrics, /healthz and /readyz in the pods."""
    return settings.metrics_port or DEFAULT_METRICS_PORT


def termination_grace(grace: float) -> int:
    """``terminationGracePeriodSeconds`` for a drain of ``grace`` seconds: whole seconds, with
    :data:`GRACE_MARGIN` to spare."""
    return math.ceil(grace) + GRACE_MARGIN


def work_queues(route: ResolvedHandler) -> list[str]:
    """The queues whose backlog more replicas of ``route``'s handler would drain: its work
    queue. Dead-letter and retry queues wait for people or for time, not for workers; a single
    active consumer is one worker whatever the replicas."""
    if route.handler.single_active_consumer:
        return []
    return [route.queue]


def dns_name(*parts: str) -> str:
    """A Kubernetes name from ``parts``: lower case, ``-`` for anything else, at most 63
    characters (a long one keeps a hash of the whole, so two never collide by truncation)."""
    name = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"w-{name}".rstrip("-")
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_LIMIT - 9].rstrip('-')}-{digest}"
    return name


def secret_key(path: str) -> str:
    """The Secret's key for a secret setting: ``url``, ``inbox-url``, ``http-token``..."""
    return path.replace(".", "-").replace("_", "-")


def _value(value: Any) -> str:
    """A setting's value as its environment variable holds it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Path):
        return str(value)
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"), sort_keys=True)
    if isinstance(value, dict):
        return json.dumps(
            {
                k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                for k, v in value.items()
            },
            sort_keys=True,
        )
    return json.dumps(list(value))


def environment(settings: Settings, options: Options, *, split: bool) -> list[dict[str, Any]]:
    """The container's environment: every setting that differs from its default, the secret
    ones (and the broker URL, always) by reference to the Secret."""
    env: list[dict[str, Any]] = [_from_secret("EVENTWORKER_URL", options.secret, "url")]
    plain: list[dict[str, Any]] = []
    for name, field in Settings.model_fields.items():
        if name in _RENDERED_ELSEWHERE or (split and name == "handlers"):
            continue
        value, default = getattr(settings, name), field.get_default(call_default_factory=True)
        variable = f"EVENTWORKER_{name.upper()}"
        if isinstance(value, BaseModel) and not isinstance(value, SecretStr):
            for sub in type(value).model_fields:
                got, base = getattr(value, sub), getattr(default, sub)
                if got != base:
                    plain.append(_pair(f"{variable}__{sub.upper()}", f"{name}.{sub}", got, options))
        elif value != default:
            if name in ("plugins", "handlers", "middleware"):
                plain.append({"name": variable, "value": ",".join(value)})
            else:
                plain.append(_pair(variable, name, value, options))
    env += sorted((e for e in plain if "valueFrom" in e), key=lambda e: e["name"])
    env += sorted((e for e in plain if "valueFrom" not in e), key=lambda e: e["name"])
    env.append({"name": "EVENTWORKER_METRICS_PORT", "value": str(metrics_port(settings))})
    return env


def _pair(variable: str, path: str, value: Any, options: Options) -> dict[str, Any]:
    if isinstance(value, SecretStr):
        return _from_secret(variable, options.secret, secret_key(path))
    return {"name": variable, "value": _value(value)}


def _from_secret(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secret_keys(settings: Settings, options: Options) -> list[str]:
    """The keys the Secret must hold for these manifests."""
    env = environment(settings, options, split=False)
    return sorted(
        {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
        | ({options.keda_host_key} if options.autoscale == "keda" else set())
    )


@dataclass(frozen=True, slots=True)
class Group:
    """The handlers one Deployment runs."""

    name: str
    routes: tuple[ResolvedHandler, ...]
    #: ``--handler`` arguments of its command (empty: every handler the settings enable).
    handlers: tuple[str, ...]


def groups(routes: Sequence[ResolvedHandler], options: Options) -> list[Group]:
    """One Deployment for all handlers, or one per handler.

    Raises:
        InvalidInputError: two handlers whose names make the same Kubernetes name.
    """
    if options.split == "none":
        return [Group(dns_name(options.name), tuple(routes), ())]
    result: dict[str, Group] = {}
    for route in routes:
        name = dns_name(options.name, route.handler.name)
        if name in result:
            raise InvalidInputError(
                f"handlers {result[name].handlers[0]!r} and {route.handler.name!r} both make "
                f"the Kubernetes name {name!r}: rename one, or render them with --split none"
            )
        result[name] = Group(name, (route,), (route.handler.name,))
    return list(result.values())


def render(
    routes: Sequence[ResolvedHandler], settings: Settings, options: Options
) -> list[dict[str, Any]]:
    """Every resource, in the order ``kubectl apply`` should meet them."""
    if not routes:
        raise InvalidInputError("no handlers installed: there is nothing to deploy")
    _check_names(options)
    if options.autoscale == "keda" and options.min_replicas > options.max_replicas:
        raise InvalidInputError(
            f"min_replicas {options.min_replicas} (--min-replicas, kubernetes.min_replicas) is "
            f"above max_replicas {options.max_replicas}"
        )
    if settings.metrics_host in _LOOPBACK:
        raise InvalidInputError(
            f"metrics_host = {settings.metrics_host}: the kubelet's probes and Prometheus "
            "cannot reach a loopback address in a pod (leave it at 0.0.0.0)"
        )
    documents: list[dict[str, Any]] = []
    if options.autoscale == "keda":
        documents.append(_trigger_authentication(options))
    for group in groups(routes, options):
        documents.append(_deployment(group, settings, options))
        documents.append(_service(group, settings, options))
        documents.append(_disruption_budget(group, options))
        if options.service_monitor:
            documents.append(_service_monitor(group, options))
        if options.autoscale == "keda":
            scaled = _scaled_object(group, settings, options)
            if scaled is not None:
                documents.append(scaled)
    return documents


def _selector(group: Group) -> dict[str, str]:
    return {"app.kubernetes.io/name": "eventworker", "app.kubernetes.io/instance": group.name}


def _labels(group: Group) -> dict[str, str]:
    return {**_selector(group), "app.kubernetes.io/component": "worker"}


def _metadata(name: str, group: Group | None, options: Options) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    if group is not None:
        meta["labels"] = _labels(group)
    return meta


def _deployment(group: Group, settings: Settings, options: Options) -> dict[str, Any]:
    port = metrics_port(settings)
    command = ["eventworker", "run"]
    for name in group.handlers:
        command += ["--handler", name]
    # The bindings in the pod template: a change of the topology shows in review and rolls
    # the workers, which declare it when they start.
    bindings = json.dumps(
        {r.handler.name: list(r.handler.bindings) for r in group.routes}, sort_keys=True
    )
    probe = {"periodSeconds": 10, "timeoutSeconds": 5}
    spec: dict[str, Any] = {}
    if options.autoscale != "keda":
        spec["replicas"] = options.replicas
    spec.update(
        {
            "selector": {"matchLabels": _selector(group)},
            # A new pod must be ready (connected and consuming) before an old one drains.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": _labels(group),
                    "annotations": {"eventworker.io/bindings": bindings},
                },
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace(settings.grace),
                    "containers": [
                        {
                            "name": "worker",
                            "image": options.image,
                            # Exec form: SIGTERM reaches eventworker itself, which drains.
                            "command": command,
                            "env": environment(settings, options, split=bool(group.handlers)),
                            "ports": [
                                {"name": "metrics", "containerPort": port, "protocol": "TCP"}
                            ],
                            "resources": options.resources(),
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "metrics"},
                                **probe,
                                "failureThreshold": 1,
                            },
                            # /healthz stays 200 while the broker is away: only a stuck event
                            # loop restarts the pod.
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "metrics"},
                                **probe,
                                "initialDelaySeconds": 10,
                                "failureThreshold": 6,
                            },
                        }
                    ],
                },
            },
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(group.name, group, options),
        "spec": spec,
    }


def _service(group: Group, settings: Settings, options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(group.name, group, options),
        "spec": {
            "selector": _selector(group),
            "ports": [
                {
                    "name": "metrics",
                    "port": metrics_port(settings),
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ],
        },
    }


def _disruption_budget(group: Group, options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(group.name, group, options),
        # One pod drained at a time by node maintenance: its messages go back to the broker
        # and the others take them.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(group)}},
    }


def _service_monitor(group: Group, options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(group.name, group, options),
        "spec": {
            "selector": {"matchLabels": _labels(group)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    }


def _trigger_authentication_name(options: Options) -> str:
    return dns_name(options.name, "rabbitmq")


def _trigger_authentication(options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _metadata(_trigger_authentication_name(options), None, options),
        "spec": {
            "secretTargetRef": [
                {"parameter": "host", "name": options.secret, "key": options.keda_host_key}
            ]
        },
    }


def _scaled_object(group: Group, settings: Settings, options: Options) -> dict[str, Any] | None:
    queues = [q for route in group.routes for q in work_queues(route)]
    if not queues:
        return None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(group.name, group, options),
        "spec": {
            "scaleTargetRef": {"name": group.name},
            "minReplicaCount": options.min_replicas,
            "maxReplicaCount": options.max_replicas,
            "cooldownPeriod": options.cooldown,
            "pollingInterval": options.polling_interval,
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        "protocol": "amqp",
                        "queueName": queue,
                        "mode": "QueueLength",
                        "value": str(options.queue_length),
                    },
                    "authenticationRef": {"name": _trigger_authentication_name(options)},
                }
                for queue in queues
            ],
        },
    }


def dump(documents: Sequence[dict[str, Any]]) -> str:
    """``documents`` as a YAML stream, keys in the order they were built.

    Raises:
        InvalidInputError: PyYAML is not installed (the ``deploy`` extra).
    """
    try:
        import yaml
    except ImportError:
        raise InvalidInputError(
            "rendering manifests needs PyYAML, which is not installed "
            "(pip install 'eventworker[deploy]')"
        ) from None
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, width=100)


def files(documents: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The documents by file for ``--out DIR``: one file per Deployment with its companions,
    and the KEDA authentication in a file of its own."""
    result: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        if document["kind"] == "TriggerAuthentication":
            result.setdefault("keda-trigger-authentication.yaml", []).append(document)
        else:
            result.setdefault(f"{document['metadata']['name']}.yaml", []).append(document)
    return result
