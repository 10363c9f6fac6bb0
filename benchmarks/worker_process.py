"""``eventworker run`` on the benchmark plugin, as a child process, the way a user runs it.

The plugin (``benchmarks.plugin``) becomes an installed distribution without pip: a
``*.dist-info`` directory with its entry point, put on the child's ``PYTHONPATH``, is what
``importlib.metadata`` finds. Settings go in a TOML file that the harness reads too, so both
compute the same topology; the harness declares it before pre-publishing, as a worker would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks import plugin
from benchmarks.harness import Bench
from benchmarks.procs import Child
from eventworker.handlers import Handler
from eventworker.plugins.discovery import Plugin, Registration
from eventworker.plugins.resolved import resolve, topology_plan
from eventworker.settings import Settings, load_settings
from eventworker.topology import layout
from eventworker.topology.declare import apply as apply_plan

#: The entry-point name of the benchmark plugin.
ENTRY_POINT = "bench"
#: What ``eventworker run`` logs once every handler's queue has its consumer.
STARTED = "worker connected to"
_DIST = "eventworker_bench-0.dist-info"


def install_plugin(directory: Path) -> Path:
    """Write the plugin's distribution metadata under ``directory``; returns the directory to
    put on ``PYTHONPATH``."""
    dist = directory / _DIST
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: eventworker-bench\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[eventworker.handlers]\n{ENTRY_POINT} = {plugin.__name__}\n"
    )
    return directory


def write_config(
    path: Path, prefix: str, handlers: Sequence[str], *, queue_type: str, prefetch: int
) -> None:
    """The worker's settings (all but the URL, which goes in the environment)."""
    values = {
        "exchange": f"{prefix}.x",
        "queue_prefix": f"{prefix}.",
        "queue_type": queue_type,
        "prefetch": prefetch,
        "plugins": [ENTRY_POINT],
        "handlers": list(handlers),
        "grace": 10.0,
    }
    # JSON strings, numbers and lists are valid TOML values.
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))


def settings(bench: Bench, config: Path) -> Settings:
    return load_settings(config, url=bench.url)


def plan(settings: Settings) -> layout.Plan:
    """The topology a worker with these settings declares."""
    source = Plugin(ENTRY_POINT, plugin.__name__, "eventworker-bench", "0")
    by_name = {h.name: h for h in vars(plugin).values() if isinstance(h, Handler)}
    registrations = [Registration(by_name[name], source) for name in settings.handlers]
    return topology_plan(resolve(registrations, settings), settings)


async def declare(bench: Bench, the_plan: layout.Plan, *, apply: bool = True) -> None:
    """Declare the worker's topology (unless not ``apply``); remember it for clean-up."""
    bench.broker.track(
        queues=[q.name for q in the_plan.queues], exchanges=[e.name for e in the_plan.exchanges]
    )
    if not apply:
        return
    # On the connection, as the worker declares it (over several channels at once).
    await apply_plan(the_plan, bench.broker.connection)


def start(bench: Bench, scratch: Path, config: Path, *extra: str, probe_dir: Path) -> Child:
    """``python -m eventworker run`` with ``config``, in ``scratch`` (so no stray
    ``./eventworker.toml`` is read)."""
    env = bench.env(
        PYTHONPATH=str(install_plugin(bench.workdir / "plugin")),
        EVENTWORKER_URL=bench.url,
        EVENTWORKER_CONFIG=str(config),
        BENCH_PROBE_DIR=str(probe_dir),
    )
    return Child(
        [bench.python(), "-m", "eventworker", "run", *extra],
        env=env,
        cwd=scratch,
        log=scratch / "worker.log",
    )
