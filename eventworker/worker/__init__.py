"""The worker: its lifecycle, one consumer per handler queue, coalesced acks, the dispatch of
one delivery to its handler and the settle decision, failure copies, metrics and health
endpoints, and the supervisor of ``run --processes``.

Modules with a leading underscore are used inside this wing only. Nothing is imported here, so
that importing one module of the wing (the supervisor, say) loads no other."""
