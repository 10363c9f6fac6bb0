"""Programs the harness runs as child processes: consumers and publishers, raw aio-pika and the
peers. Each peer's program runs in that peer's own virtualenv, so this package and the modules
it imports from ``benchmarks`` (``probe``, ``wire``) use the standard library only, except for
the client library each program measures."""
