"""Dead letters as operators see and move them: reading a queue in order, a dead-lettered
message with its diagnosis, and the operations ``ls``, ``show``, ``replay``, ``purge`` and
``export``."""
