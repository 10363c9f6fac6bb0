"""The whole exception tree of eventworker; each error knows the CLI exit code it maps to.

Foreign exceptions (aio-pika, aiormq, pydantic, importlib) are translated into these at one
boundary each, with ``raise ... from exc``, so callers only ever catch eventworker errors.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``eventworker`` command; distinct per kind of failure."""

    OK = 0
    #: Some events were not published, or the worker stopped on an unexpected error.
    FAILED = 1
    #: click's own code for a malformed command line.
    USAGE = 2
    #: The TOML file, an environment variable or an option holds a bad value.
    CONFIG = 3
    #: A handler plugin failed to load or conflicts with another, or its resource failed to start.
    PLUGIN = 4
    #: Input refused before anything was sent (bad JSON, bad routing key, too large).
    INVALID_INPUT = 5
    #: The broker could not be reached (refused, timed out, DNS).
    BROKER_UNREACHABLE = 6
    #: The broker refused the credentials or the virtual host.
    BROKER_AUTH = 7
    #: The broker refused an operation (topology conflict, missing exchange, no permission).
    BROKER_REFUSED = 8
    #: The inbox store (SQLite, PostgreSQL, Redis) could not be opened or failed.
    INBOX_UNAVAILABLE = 9
    #: The outbox database could not be reached, or refused an operation.
    DATABASE = 10
    #: ``topology plan`` found the broker differing from the plan (``apply``: still differing).
    DRIFT = 11
    #: A second SIGTERM/SIGINT cut the graceful drain short; or a signal stopped a dlq command
    #: or a publish.
    INTERRUPTED = 130


class EventworkerError(Exception):
    """Base of every error eventworker raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(EventworkerError):
    """A setting is invalid; the message names the setting, never a secret value."""

    exit_code = ExitCode.CONFIG


class RegistryError(EventworkerError):
    """A handler plugin cannot be used: import failure, no handler, bad key, duplicate name."""

    exit_code = ExitCode.PLUGIN

    def __init__(self, message: str, *, entry_point: str = "", distribution: str = "") -> None:
        where = f"plugin {entry_point!r}" if entry_point else ""
        if distribution:
            where += f" (distribution {distribution})"
        super().__init__(f"{where}: {message}" if where else message)
        self.entry_point = entry_point
        self.distribution = distribution


class ResourceError(RegistryError):
    """A plugin's resource failed to start (its set-up raised): the worker does not consume."""


class InvalidInputError(EventworkerError):
    """Input from a user or producer refused before anything was sent."""

    exit_code = ExitCode.INVALID_INPUT


class SignatureError(InvalidInputError):
    """A signed HTTP request refused: its signature is missing, malformed, outside the time
    window, does not match, or was used already. ``status`` is the HTTP answer: 401, or 503
    when the ingress cannot remember one more signature (the client should retry later)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class EnvelopeError(EventworkerError):
    """A delivered message cannot become an event; it is dead-lettered at once, never retried.

    ``reason`` is the machine-readable cause written into the dead-letter copy's headers:
    ``too_large``, ``unsupported_content_type``, ``decode_error``, ``schema_error`` or
    ``no_handler`` (the routing key matches none of the handler's binding keys).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(EventworkerError):
    """RabbitMQ could not be reached or refused an operation."""

    exit_code = ExitCode.BROKER_REFUSED


class BrokerUnreachableError(BrokerError):
    exit_code = ExitCode.BROKER_UNREACHABLE


class BrokerAuthError(BrokerError):
    exit_code = ExitCode.BROKER_AUTH


class TopologyConflictError(BrokerError):
    """A queue exists with other arguments than the ones eventworker would declare."""

    def __init__(self, message: str, *, queue: str, argument: str) -> None:
        super().__init__(message)
        self.queue = queue
        self.argument = argument


class PublishError(BrokerError):
    """An event was not confirmed by the broker (nacked, unroutable, timed out, connection lost)."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, status: str, event_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.event_id = event_id


class InboxError(EventworkerError):
    """The inbox store could not be opened, or failed an operation; the message names the store
    by its redacted URL, never its password."""

    exit_code = ExitCode.INBOX_UNAVAILABLE


class ClaimLostError(InboxError):
    """This worker no longer holds the claim on an event: its lease ran out and another worker
    took the event over. Raised inside ``ctx.transaction()``, so the handler's writes roll back.
    """


class IdempotencyConflictError(EventworkerError):
    """An event id already seen by a handler came again with another body; the copy is
    dead-lettered with reason ``idempotency_key_conflict`` rather than silently skipped."""

    def __init__(self, message: str, *, event_id: str, handler: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.handler = handler


class OutboxError(EventworkerError):
    """The outbox database could not be reached or refused an operation (the relay retries)."""

    exit_code = ExitCode.DATABASE


class Interrupted(EventworkerError):
    """A signal stopped an operation between two messages; what it reported done is done."""

    exit_code = ExitCode.INTERRUPTED


class HandlerTimeoutError(EventworkerError):
    """A handler ran longer than its timeout; counts as a failure for the retry policy."""


class HandlerSignal(Exception):
    """Raised by a handler to steer what happens to the message; not a failure of eventworker."""


class Retry(HandlerSignal):
    """Ask for another attempt after ``delay`` seconds (or the policy's delay when None).

    Still bounded by the policy's ``max_attempts``: the last attempt's Retry dead-letters.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and delay <= 0:
            raise ValueError("Retry delay must be positive")
        super().__init__(reason or (f"retry requested in {delay}s" if delay else "retry requested"))
        self.delay = delay
        self.reason = reason


class Reject(HandlerSignal):
    """Dead-letter the message at once, with ``reason`` in its diagnosis; never retried."""

    def __init__(self, reason: str = "rejected by handler") -> None:
        super().__init__(reason)
        self.reason = reason


class RejectedByMiddleware(HandlerSignal):
    """A middleware refused the event (it raised ``Reject`` outside the handler): dead-lettered at
    once with reason ``rejected_by_middleware``, its diagnosis naming the middleware."""

    def __init__(self, middleware: str, reason: str) -> None:
        super().__init__(f"rejected by middleware {middleware}: {reason}")
        self.middleware = middleware
        self.reason = reason
