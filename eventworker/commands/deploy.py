"""``eventworker deploy kubernetes``: manifests for the handlers and settings ``run`` would use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from eventworker.commands import config_option, errors, examples
from eventworker.errors import InvalidInputError
from eventworker.settings import load_settings


@examples(
    "eventworker deploy kubernetes --image registry.example/acme-worker:1.4 | kubectl apply -f -",
    "eventworker deploy kubernetes --image acme-worker:1.4 --split handler --autoscale keda "
    "--out k8s/",
)
@click.group("deploy")
def deploy() -> None:
    """Render deployment manifests from the handlers and settings `eventworker run` would use."""


@examples(
    "eventworker deploy kubernetes --image registry.example/acme-worker:1.4 | kubectl apply -f -",
    "eventworker deploy kubernetes --image acme-worker:1.4 --split handler --autoscale keda "
    "--out k8s/",
    "eventworker deploy kubernetes --image acme-worker:1.4 --namespace jobs --service-monitor",
    "eventworker deploy kubernetes --image acme-worker:1.4 --format helm --out charts/workers",
)
@deploy.command("kubernetes")
@click.option(
    "--image", required=True, help="The container image, with eventworker and the plugins."
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    metavar="DIR|-",
    help="Write one file per Deployment (and its companions) into DIR; - writes one YAML "
    "stream to standard output.",
)
@click.option("--namespace", default=None, help="The namespace of every resource (default: none).")
@click.option(
    "--name",
    "base_name",
    default="eventworker",
    show_default=True,
    help="The Deployment's name; with --split handler, the prefix of each one's.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["yaml", "helm"]),
    default="yaml",
    show_default=True,
    help="yaml: the manifests; helm: a Helm chart of the same manifests, its values the "
    "image, replicas, resources, Secret and autoscaling (needs --out DIR).",
)
@click.option(
    "--split",
    type=click.Choice(["none", "handler"]),
    default=None,
    help="One Deployment for every handler, or one per handler (each runs "
    "`eventworker run --handler NAME` and scales alone). Default: kubernetes.split, none.",
)
@click.option(
    "--handler",
    "handler_names",
    multiple=True,
    metavar="NAME",
    help="Only this handler (repeatable). Default: as `run` would.",
)
@click.option(
    "--secret",
    default=None,
    help="The Secret holding the broker URL (key `url`) and any other secret setting in use. "
    "Default: kubernetes.secret, eventworker-broker.",
)
@click.option(
    "--replicas",
    type=click.IntRange(0),
    default=None,
    help="Pods per Deployment (without --autoscale). Default: kubernetes.replicas, 1.",
)
@click.option(
    "--service-monitor/--no-service-monitor",
    default=None,
    help="Also a Prometheus-operator ServiceMonitor per Deployment. "
    "Default: kubernetes.service_monitor, no.",
)
@click.option(
    "--autoscale",
    type=click.Choice(["none", "keda"]),
    default=None,
    help="keda: a KEDA ScaledObject per Deployment, one rabbitmq trigger per work queue. "
    "Default: kubernetes.autoscale, none.",
)
@click.option(
    "--queue-length",
    type=click.IntRange(1),
    default=None,
    help="KEDA: ready messages per replica it aims for, per work queue. "
    "Default: kubernetes.queue_length, 100.",
)
@click.option(
    "--min-replicas",
    type=click.IntRange(0),
    default=None,
    help="KEDA: fewest pods. Default: kubernetes.min_replicas, 1.",
)
@click.option(
    "--max-replicas",
    type=click.IntRange(1),
    default=None,
    help="KEDA: most pods. Default: kubernetes.max_replicas, 10.",
)
@click.option(
    "--cooldown",
    type=click.IntRange(0),
    default=None,
    help="KEDA: seconds after the last message before scaling to zero (--min-replicas 0). "
    "Default: kubernetes.cooldown, 300.",
)
@click.option(
    "--keda-host-key",
    default=None,
    help="KEDA: the Secret's key holding one AMQP URL (when `url` lists several nodes). "
    "Default: kubernetes.keda_host_key, url.",
)
@config_option
def kubernetes(
    image: str,
    out: str,
    namespace: str | None,
    base_name: str,
    output_format: str,
    split: str | None,
    handler_names: Sequence[str],
    secret: str | None,
    replicas: int | None,
    service_monitor: bool | None,
    autoscale: str | None,
    queue_length: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    cooldown: int | None,
    keda_host_key: str | None,
    config: str | None,
) -> None:
    """Render Kubernetes manifests for the installed handlers, as `eventworker run` would run them.

    A Deployment (or one per handler with --split handler) whose pods run `eventworker run`
    with readiness and liveness probes on /readyz and /healthz at the metrics port (metrics_port,
    or 9100 when it is 0), a termination grace 15 s above the drain grace, the broker URL from
    the Secret (never written out) and every other setting that differs from its default as an
    EVENTWORKER_* variable; a metrics Service and a PodDisruptionBudget for each. With
    --autoscale keda, a ScaledObject per Deployment with one rabbitmq trigger per work queue
    (dead-letter and retry queues never scale workers) and a TriggerAuthentication reading
    `host` from the same Secret. The choices besides the image and the names come from the
    [kubernetes] settings, each option overriding its setting. --format helm writes the same
    manifests as a Helm chart into --out DIR, the image, replicas, resources, Secret,
    ServiceMonitor and autoscaling as its values. Needs PyYAML (the "deploy" extra).
    """
    from eventworker.deploy import kubernetes as k8s
    from eventworker.plugins import discovery
    from eventworker.plugins.resolved import resolve

    with errors():
        if output_format == "helm" and out == "-":
            raise InvalidInputError("--format helm writes a chart: give it a folder with --out DIR")
        settings = load_settings(config, handlers=tuple(handler_names) or None)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        options = k8s.Options.from_settings(
            settings.kubernetes,
            image=image,
            name=base_name,
            namespace=namespace,
            split=split,
            secret=secret,
            replicas=replicas,
            service_monitor=service_monitor,
            autoscale=autoscale,
            queue_length=queue_length,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cooldown=cooldown,
            keda_host_key=keda_host_key,
        )
        routes = resolve(registrations, settings)
        if output_format == "helm":
            from eventworker.deploy import helm

            files = helm.chart(routes, settings, options)
            helm.write(Path(out), files, lambda line: click.echo(f"note: {line}", err=True))
            click.echo(f"wrote a chart of {len(files)} files to {out}", err=True)
        elif out == "-":
            click.echo(k8s.dump(k8s.render(routes, settings, options)), nl=False)
        else:
            _write_folder(Path(out), k8s.files(k8s.render(routes, settings, options)))
        local = settings.inbox.url.get_secret_value().partition(":")[0] in ("sqlite", "memory")
        idempotent = sorted(r.handler.name for r in routes if r.idempotent)
        if idempotent and local:
            click.echo(
                f"note: idempotent handlers ({', '.join(idempotent)}) with a SQLite or memory "
                "inbox: each pod keeps its own, so a redelivery to another pod runs again; "
                "set inbox.url to PostgreSQL or Redis",
                err=True,
            )
        if settings.processes > 1:
            click.echo(
                f"note: processes = {settings.processes} is not carried over: a pod runs one "
                "worker process; scale with replicas",
                err=True,
            )
        keys = ", ".join(k8s.secret_keys(settings, options))
        click.echo(f"the Secret {options.secret!r} must hold the keys: {keys}", err=True)


def _write_folder(folder: Path, documents: dict[str, list[dict[str, Any]]]) -> None:
    """One file per Deployment into ``folder``, naming the files there this run did not write."""
    from eventworker.deploy import kubernetes as k8s

    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"--out {folder}: not a folder")
    rendered = {name: k8s.dump(docs) for name, docs in documents.items()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (folder / name).write_text(text)
    count = len(rendered)
    click.echo(f"wrote {count} file{'' if count == 1 else 's'} to {folder}", err=True)
    # A handler removed since the last render leaves its file behind: say so, rather than let
    # `kubectl apply -f DIR` bring its Deployment back.
    for stale in sorted(p.name for p in folder.glob("*.yaml")):
        if stale not in rendered:
            click.echo(
                f"note: {folder / stale} was not written by this run (a handler removed since?)",
                err=True,
            )
