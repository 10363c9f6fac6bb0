"""Getting events to the broker: the confirm channel every publish goes through, the
application ``Publisher`` and its blocking twin, the HTTP ingress, and unrouted-event tracking."""
