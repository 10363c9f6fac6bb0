"""``eventworker deploy kubernetes``: manifests for the handlers and settings ``run`` would use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    "--split",
    type=click.Choice(["none", "handler"]),
    default="none",
    show_default=True,
    help="One Deployment for every handler, or one per handler (each runs "
    "`eventworker run --handler NAME` and scales alone).",
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
    default="eventworker-broker",
    show_default=True,
    help="The Secret holding the broker URL (key `url`) and any other secret setting in use.",
)
@click.option(
    "--replicas",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Pods per Deployment (without --autoscale).",
)
@click.option(
    "--service-monitor",
    is_flag=True,
    help="Also a Prometheus-operator ServiceMonitor per Deployment.",
)
@click.option(
    "--autoscale",
    type=click.Choice(["none", "keda"]),
    default="none",
    show_default=True,
    help="keda: a KEDA ScaledObject per Deployment, one rabbitmq trigger per work queue.",
)
@click.option(
    "--queue-length",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="KEDA: ready messages per replica it aims for, per work queue.",
)
@click.option(
    "--min-replicas",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="KEDA: fewest pods.",
)
@click.option(
    "--max-replicas", type=click.IntRange(1), default=10, show_default=True, help="KEDA: most pods."
)
@click.option(
    "--cooldown",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="KEDA: seconds after the last message before scaling to zero (--min-replicas 0).",
)
@click.option(
    "--keda-host-key",
    default="url",
    show_default=True,
    help="KEDA: the Secret's key holding one AMQP URL (when `url` lists several nodes).",
)
@config_option
def kubernetes(
    image: str,
    out: str,
    namespace: str | None,
    base_name: str,
    split: str,
    handler_names: Sequence[str],
    secret: str,
    replicas: int,
    service_monitor: bool,
    autoscale: str,
    queue_length: int,
    min_replicas: int,
    max_replicas: int,
    cooldown: int,
    keda_host_key: str,
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
    `host` from the same Secret. Needs PyYAML (the "deploy" extra).
    """
    from eventworker.deploy import kubernetes as k8s
    from eventworker.plugins import discovery
    from eventworker.plugins.resolved import resolve

    with errors():
        if autoscale == "keda" and min_replicas > max_replicas:
            raise InvalidInputError(
                f"--min-replicas {min_replicas} is above --max-replicas {max_replicas}"
            )
        settings = load_settings(config, handlers=tuple(handler_names) or None)
        registrations = discovery.discover(plugins=settings.plugins, names=settings.handlers)
        options = k8s.Options(
            image=image,
            name=base_name,
            namespace=namespace,
            split="handler" if split == "handler" else "none",
            secret=secret,
            replicas=replicas,
            service_monitor=service_monitor,
            autoscale="keda" if autoscale == "keda" else "none",
            queue_length=queue_length,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cooldown=cooldown,
            keda_host_key=keda_host_key,
        )
        routes = resolve(registrations, settings)
        documents = k8s.render(routes, settings, options)
        if out == "-":
            click.echo(k8s.dump(documents), nl=False)
        else:
            folder = Path(out)
            if folder.exists() and not folder.is_dir():
                raise InvalidInputError(f"--out {out}: not a folder")
            rendered = {name: k8s.dump(docs) for name, docs in k8s.files(documents).items()}
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in rendered.items():
                (folder / name).write_text(text)
            count = len(rendered)
            click.echo(f"wrote {count} file{'' if count == 1 else 's'} to {folder}", err=True)
            # A handler removed since the last render leaves its file behind: say so, rather
            # than let `kubectl apply -f DIR` bring its Deployment back.
            for stale in sorted(p.name for p in folder.glob("*.yaml")):
                if stale not in rendered:
                    click.echo(
                        f"note: {folder / stale} was not written by this run "
                        "(a handler removed since?)",
                        err=True,
                    )
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
        click.echo(f"the Secret {secret!r} must hold the keys: {keys}", err=True)
