"""Bounds on broker-held waits as a test can check them from its own clock."""

#: How much earlier than its TTL, by this process's monotonic clock, the broker may hand back
#: a message that waited in a retry queue: RabbitMQ's timers and clock are not the client's
#: (seen: 3 to 14 ms early on a loaded machine). A lower bound on a broker-held wait allows it.
TTL_EARLY = 0.1
