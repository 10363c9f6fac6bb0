"""From installed distributions to handlers the worker can run: discovery through the
``eventworker.handlers`` entry-point group, and each handler resolved into its queues, retry
policy and limits."""
