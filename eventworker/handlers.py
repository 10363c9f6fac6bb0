"""The plugin API: ``@handler``, :class:`Handler`, :class:`RetryPolicy`, :class:`Context`,
``@resource`` and :class:`Resource`, and :class:`Middleware`.

No aio-pika here, so a plugin's handlers can be imported and unit-tested without a broker.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import inspect
import math
import sys
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType, SimpleNamespace
from typing import Any, Generic, Protocol, TypeVar, overload

from loguru import logger as _root_logger
from pydantic import BaseModel

from eventworker.envelope import Event
from eventworker.observability import tracing

#: AMQP short strings (routing keys, queue names) are at most 255 bytes.
MAX_SHORTSTR = 255

T = TypeVar("T")
#: A context without resources: shared, so building a context costs no allocation for them.
NO_RESOURCES: Mapping[type[Any], Any] = MappingProxyType({})


def _positive(value: float) -> bool:
    """A positive, finite number (NaN and infinity are refused)."""
    return math.isfinite(value) and value > 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """After failed attempt k the next waits ``delays[min(k-1, len(delays)-1)]`` seconds.

    ``max_attempts`` counts the first delivery: ``max_attempts=4`` is one try and three retries.
    """

    max_attempts: int = 5
    delays: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if not self.delays or not all(_positive(d) for d in self.delays):
            raise ValueError("RetryPolicy.delays must be one or more positive numbers of seconds")
        # Millisecond precision: retry queues are named and their TTLs set in milliseconds.
        object.__setattr__(self, "delays", tuple(round(float(d), 3) for d in self.delays))

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return self.delays[min(attempt - 1, len(self.delays) - 1)]


class Publish(Protocol):
    """What ``Context.publish`` calls: a confirmed, mandatory publish of a follow-up event."""

    def __call__(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> Awaitable[None]: ...


class Logger(Protocol):
    def debug(self, message: str, *args: Any, **kwargs: Any) -> None: ...
    def info(self, message: str, *args: Any, **kwargs: Any) -> None: ...
    def warning(self, message: str, *args: Any, **kwargs: Any) -> None: ...
    def error(self, message: str, *args: Any, **kwargs: Any) -> None: ...
    def exception(self, message: str, *args: Any, **kwargs: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets besides its event: follow-up publishing, a bound logger, its name."""

    handler: str
    event: Event[Any]
    _publish: Publish = field(repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _transaction: Callable[[], AbstractAsyncContextManager[Any]] | None = field(
        default=None, repr=False
    )
    _resources: Mapping[type[Any], Any] | None = field(default=None, repr=False)

    def resource(self, key: type[T]) -> T:
        """The object the resource declared for ``key`` (its type) holds, as entered when the
        worker started: ``db = ctx.resource(Database)`` is a ``Database``.

        Raises:
            LookupError: no loaded plugin declares a resource for ``key``.
        """
        resources = self._resources or NO_RESOURCES
        try:
            value: T = resources[key]
        except KeyError:
            declared = ", ".join(sorted(k.__qualname__ for k in resources)) or "none"
            raise LookupError(
                f"handler {self.handler} asked for resource {key.__qualname__}, which no loaded "
                f"plugin declares (declared: {declared})"
            ) from None
        return value

    @property
    def logger(self) -> Logger:
        """A loguru logger bound to the handler name, event id and type, attempt and
        correlation id."""
        return _root_logger.bind(
            handler=self.handler,
            event_id=self.event.id,
            event_type=self.event.type,
            attempt=self.event.attempt,
            correlation_id=self.event.correlation_id,
        )

    async def publish(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        """Publish a follow-up event and wait for the broker's confirm.

        It carries this event's correlation id, this event's id as its causation id, and its
        W3C trace context (``traceparent``, ``tracestate``) unless ``headers`` set their own.
        With ``delay`` (seconds, rounded up, or a timedelta) or ``at`` (an aware datetime) the
        broker holds it that long first (the ``delay_levels`` setting; docs/time.md).

        Raises:
            eventworker.errors.PublishError: not confirmed (nacked, unroutable, timed out);
                left unhandled, the handler's attempt fails and is retried per policy.
            eventworker.errors.InvalidInputError: a negative delay, both ``delay`` and ``at``,
                or a delay the levels cannot hold (or delayed delivery is off).
        """
        own = dict(headers or {})
        # Only when asked: a publisher that predates delays still takes the rest.
        when: dict[str, Any] = {"delay": delay} if delay is not None else {}
        if at is not None:
            when["at"] = at
        with tracing.producing(routing_key, received=self.event.headers) as trace_headers:
            # A handler's own traceparent wins, and the carried tracestate is not its state.
            carried = {} if tracing.TRACEPARENT in own else trace_headers
            await self._publish(
                routing_key,
                data,
                id=id,
                headers={**carried, **own} or None,
                correlation_id=self.event.correlation_id,
                causation_id=self.event.id,
                **when,
            )

    def publish_blocking(
        self,
        routing_key: str,
        data: Any,
        *,
        id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> None:
        """``publish`` for sync (``def``) handlers, in their thread: blocks until confirmed."""
        if self._loop is None:
            raise RuntimeError("publish_blocking needs a running worker")
        future: Future[None] = asyncio.run_coroutine_threadsafe(
            self.publish(routing_key, data, id=id, headers=headers, delay=delay, at=at),
            self._loop,
        )
        future.result()

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """``async with ctx.transaction() as conn:`` a PostgreSQL transaction (an asyncpg
        connection) that also marks this event done in the inbox when it commits, so the
        handler's writes to that database and the done mark commit together or not at all.

        Only for idempotent handlers on a worker whose inbox is PostgreSQL; at most once per
        handling. Whatever must happen exactly once belongs inside the block: once it has
        committed, the event counts as handled even if the handler fails afterwards.

        Raises:
            RuntimeError: the handler is not idempotent on this worker.
            eventworker.errors.InboxError: the inbox is not PostgreSQL.
            eventworker.errors.ClaimLostError: on leaving the block, when the event's claim
                ran out and was taken over meanwhile; the transaction is rolled back.
        """
        if self._transaction is None:
            raise RuntimeError(
                f"ctx.transaction() is only for idempotent handlers; {self.handler} is not"
            )
        return self._transaction()


HandlerFunc = Callable[[Event[Any], Context], Awaitable[None] | None]

#: A handler's pydantic model.
M = TypeVar("M", bound=BaseModel)
#: What ``@handler(model=M)`` decorates: a function whose first parameter takes ``Event[M]``,
#: so type checkers refuse one annotated ``Event[Other]`` (``Event[Any]`` and ``Event[Base]``
#: of a base of ``M`` fit, as at run time).
ModelHandlerFunc = Callable[[Event[M], Context], Awaitable[None] | None]

#: What ``@resource`` decorates: an async or sync generator function yielding the object once
#: (set-up before the ``yield``, tear-down after), or a function returning an async or sync
#: context manager. It takes no arguments.
ResourceFactory = Callable[[], Any]

#: Return annotations whose first argument is the resource's type.
_YIELDING = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
    collections.abc.Iterator,
    collections.abc.Generator,
    contextlib.AbstractAsyncContextManager,
    contextlib.AbstractContextManager,
)


@dataclass(frozen=True, slots=True, eq=False)
class Resource(Generic[T]):
    """A long-lived object a plugin's handlers share (a connection pool, a client), with a
    lifespan: the worker enters it once per process before consuming and leaves it after the
    drain. Handlers get it with ``ctx.resource(key)``."""

    factory: ResourceFactory
    key: type[T]
    name: str

    def open(self) -> AbstractAsyncContextManager[T] | AbstractContextManager[T]:
        """A fresh context manager whose entering yields the resource's object.

        Raises:
            TypeError: the factory returned neither an async nor a sync context manager.
        """
        func = self.factory
        if inspect.isasyncgenfunction(func):
            return contextlib.asynccontextmanager(func)()
        if inspect.isgeneratorfunction(func):
            return contextlib.contextmanager(func)()
        made = func()
        if isinstance(made, AbstractAsyncContextManager | AbstractContextManager):
            return made
        if hasattr(made, "__aenter__") or hasattr(made, "__enter__"):
            return made  # type: ignore[no-any-return]  # a context manager by duck typing
        raise TypeError(
            f"resource {self.name} returned a {type(made).__name__}, not a context manager"
        )


def _resource_key(func: ResourceFactory, name: str) -> type[Any]:
    """The type a factory's return annotation names: ``AsyncIterator[Db]``, ``Iterator[Db]``,
    ``AbstractAsyncContextManager[Db]``... give ``Db``; a class that is itself a context manager
    (``-> Db``) gives ``Db``."""
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception as exc:
        raise ValueError(
            f"@resource {name}: cannot resolve its return annotation ({type(exc).__name__}: "
            f"{exc}); import the type at run time or give @resource(provides=...)"
        ) from None
    origin = typing.get_origin(hint)
    if origin in _YIELDING:
        hint = typing.get_args(hint)[0] if typing.get_args(hint) else None
    elif isinstance(hint, type) and not (hasattr(hint, "__aenter__") or hasattr(hint, "__enter__")):
        hint = None
    key = typing.get_origin(hint) or hint
    if not isinstance(key, type):
        raise ValueError(
            f"@resource {name}: annotate what it yields (-> AsyncIterator[Db], "
            f"-> AbstractAsyncContextManager[Db], ...) or give @resource(provides=Db)"
        )
    return key


@overload
def resource(func: Callable[[], AsyncIterator[T]], /) -> Resource[T]: ...
@overload
def resource(func: Callable[[], Iterator[T]], /) -> Resource[T]: ...
@overload
def resource(func: Callable[[], AbstractAsyncContextManager[T]], /) -> Resource[T]: ...
@overload
def resource(func: Callable[[], AbstractContextManager[T]], /) -> Resource[T]: ...
@overload
def resource(
    *, provides: type[T], name: str | None = None
) -> Callable[[ResourceFactory], Resource[T]]: ...
@overload
def resource(*, name: str) -> Callable[[ResourceFactory], Resource[Any]]: ...
def resource(
    func: ResourceFactory | None = None,
    /,
    *,
    provides: type[Any] | None = None,
    name: str | None = None,
) -> Resource[Any] | Callable[[ResourceFactory], Resource[Any]]:
    """Declare a resource: ``@resource`` on an ``async def`` that yields the object once.

    The code before ``yield`` runs when the worker starts, the code after it when the worker
    stops (also when start-up fails later). A function returning an async or sync context
    manager works too (``@asynccontextmanager`` functions, a client class's constructor), and so
    does a sync generator. Handlers look it up by its type, ``ctx.resource(Db)``, which is taken
    from the return annotation (``-> AsyncIterator[Db]``) or from ``provides=``. ``name``
    (default: the function's name) names it in logs and errors.

    Raises:
        ValueError: it takes arguments, or its type is neither annotated nor given; when the
            plugin module is imported.
    """

    def declare(factory: ResourceFactory) -> Resource[Any]:
        if not callable(factory):
            raise ValueError("@resource decorates a function")
        label: str = name or getattr(factory, "__name__", None) or repr(factory)
        try:
            inspect.signature(factory).bind()
        except TypeError:
            raise ValueError(f"@resource {label}: the function must take no arguments") from None
        except ValueError:
            pass  # no signature to check (a builtin): calling it will tell
        key = provides if provides is not None else _resource_key(factory, label)
        if not isinstance(key, type):
            raise ValueError(f"@resource {label}: provides= must be a type")
        return Resource(factory=factory, key=key, name=label)

    return declare(func) if func is not None else declare


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the function plus everything the worker needs to run it.

    Calling it calls the function, so plugin authors can unit-test handlers directly.
    """

    func: HandlerFunc
    name: str
    bindings: tuple[str, ...]
    queue: str | None = None
    model: type[BaseModel] | None = None
    retry: RetryPolicy | None = None
    concurrency: int | None = None
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    give_up_on: tuple[type[BaseException], ...] = ()
    single_active_consumer: bool = False
    idempotent: bool | None = None
    #: The events it publishes, as declared (``publishes=``): routing key and model, if any.
    #: Only a description (``eventworker asyncapi``): ``ctx.publish`` is not limited to them.
    publishes: tuple[tuple[str, type[BaseModel] | None], ...] = ()
    #: Whether ``func`` is a coroutine function: read for every event, inspected once.
    is_async: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))

    @property
    def module(self) -> str:
        return getattr(self.func, "__module__", "") or ""

    def __call__(self, event: Event[Any], ctx: Context) -> Awaitable[None] | None:
        return self.func(event, ctx)


def check_binding_key(key: str) -> None:
    """Refuse a binding key RabbitMQ would accept but that cannot mean what was intended.

    Words are separated by dots; ``*`` matches one word and ``#`` zero or more, but only as a
    whole word: ``orders.*created`` would match the literal word ``*created``.

    Raises:
        ValueError: naming the key and the problem.
    """
    if not key:
        raise ValueError("empty binding key")
    if len(key.encode()) > MAX_SHORTSTR:
        raise ValueError(f"binding key {key[:40]!r}... is longer than {MAX_SHORTSTR} bytes")
    for word in key.split("."):
        if word in ("*", "#"):
            continue
        if not word:
            raise ValueError(f"binding key {key!r} has an empty word (two dots or an edge dot)")
        if "*" in word or "#" in word:
            raise ValueError(
                f"binding key {key!r}: '*' and '#' must be whole words, not part of {word!r}"
            )


#: What a handler function looks like, for errors that say what was expected.
EXPECTED_FORM = "(event: Event[Model], ctx: Context)"


def _described(sig: inspect.Signature) -> str:
    """The parameters as written, without annotations: ``(payload)``, ``(event, ctx, extra)``."""
    return str(
        sig.replace(
            parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
            return_annotation=sig.empty,
        )
    )


def check_signature(func: Callable[..., Any], label: str) -> None:
    """Refuse a function the worker cannot call as ``func(event, ctx)``.

    Raises:
        ValueError: naming the handler, what it takes and the expected form.
    """
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise ValueError(
            f"@handler {label}: a generator function never runs its body when called; "
            f"expected a function {EXPECTED_FORM} that returns (async def or def)"
        )
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return  # no signature to read (a builtin): calling it will tell
    try:
        sig.bind(None, None)
    except TypeError:
        raise ValueError(
            f"@handler {label}: takes {_described(sig)}; expected {EXPECTED_FORM}"
        ) from None


def _first_parameter(func: Callable[..., Any]) -> inspect.Parameter | None:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None
    return params[0]


def infer_model(
    func: Callable[..., Any],
    label: str,
    *,
    explicit: type[BaseModel] | None,
    localns: Mapping[str, Any] | None = None,
) -> type[BaseModel] | None:
    """The handler's model: ``explicit`` (``model=``), else ``Model`` of an ``Event[Model]``
    annotation on the first parameter (string annotations resolved), else None.

    Raises:
        ValueError: the annotation names another model than ``model=``, names a model without
            ``Event[...]``, or cannot be resolved while no ``model=`` is given.
    """
    first = _first_parameter(func)
    if first is None or first.annotation is inspect.Parameter.empty:
        return explicit
    try:
        hint = _resolve(func, first, localns)
    except Exception as exc:
        if explicit is not None:
            return explicit
        raise ValueError(
            f"@handler {label}: cannot resolve the annotation {first.annotation!r} of "
            f"{first.name} ({type(exc).__name__}: {exc}); import what it names at run time "
            f"(not under TYPE_CHECKING) or give model="
        ) from None
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        raise ValueError(
            f"@handler {label}: {first.name} is annotated {hint.__name__}, but a handler gets an "
            f"Event; expected {EXPECTED_FORM} with Event[{hint.__name__}]"
        )
    if typing.get_origin(hint) is not Event:
        return explicit
    args = typing.get_args(hint)
    annotated = args[0] if args else None
    if not (isinstance(annotated, type) and issubclass(annotated, BaseModel)):
        return explicit
    if explicit is None:
        return annotated
    if not issubclass(explicit, annotated):
        raise ValueError(
            f"@handler {label}: model={explicit.__name__} contradicts the annotation "
            f"Event[{annotated.__name__}] of {first.name}; drop model= (it is inferred) or make "
            f"them agree"
        )
    return explicit


def _resolve(
    func: Callable[..., Any], first: inspect.Parameter, localns: Mapping[str, Any] | None
) -> Any:
    """The first parameter's annotation, a string one evaluated as ``typing.get_type_hints``
    does; only that one, so an unresolvable annotation elsewhere does not matter."""
    if not isinstance(first.annotation, str):
        return first.annotation
    target = inspect.unwrap(func)
    shim = SimpleNamespace(
        __annotations__={first.name: first.annotation},
        __globals__=getattr(target, "__globals__", {}),
    )
    return typing.get_type_hints(shim, localns=dict(localns or {}))[first.name]


@overload
def handler(
    *binding_keys: str,
    name: str | None = None,
    queue: str | None = None,
    model: type[M],
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    give_up_on: tuple[type[BaseException], ...] = (),
    single_active_consumer: bool = False,
    idempotent: bool | None = None,
) -> Callable[[ModelHandlerFunc[M]], Handler]: ...
@overload
def handler(
    *binding_keys: str,
    name: str | None = None,
    queue: str | None = None,
    model: None = None,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    give_up_on: tuple[type[BaseException], ...] = (),
    single_active_consumer: bool = False,
    idempotent: bool | None = None,
) -> Callable[[HandlerFunc], Handler]: ...
def handler(
    *binding_keys: str,
    name: str | None = None,
    queue: str | None = None,
    model: type[BaseModel] | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    give_up_on: tuple[type[BaseException], ...] = (),
    single_active_consumer: bool = False,
    idempotent: bool | None = None,
    publishes: Iterable[str | tuple[str, type[BaseModel]]] = (),
) -> Callable[[HandlerFunc], Handler]:
    """Declare a handler for events whose routing key matches any of ``binding_keys``.

    Binding keys use RabbitMQ topic syntax. ``name`` defaults to the function's name and must
    be unique among installed handlers; ``queue`` defaults to ``<queue_prefix><name>``.
    ``retry_on`` lists the only exception types that are retried (others dead-letter at once);
    ``give_up_on`` lists exception types that dead-letter at once. ``idempotent=True`` runs
    each event at most once per handler through the inbox (duplicates are acked unrun);
    ``None`` takes the ``inbox.idempotent`` setting.
    ``single_active_consumer`` keeps the queue's order across every worker: the broker delivers
    to one consumer at a time and fails over to another; concurrency then defaults to 1.
    Retries still come back later than the messages behind them.

    The function takes ``(event: Event[Model], ctx: Context)``; ``model`` is inferred from the
    first parameter's annotation ``Event[Model]`` (a pydantic model), unless ``model=`` is given.
    Type checkers see the tie too: with ``model=Order``, a function annotated ``Event[Invoice]``
    is refused; ``event.data`` is typed by the annotation.

    ``publishes`` lists the events the handler publishes, each a routing key or a
    ``(routing key, Model)`` pair: ``eventworker asyncapi`` describes them; publishing is not
    limited to them.

    Raises:
        ValueError: a bad binding key or option, a bad ``publishes`` entry, a function that
            cannot be called with ``(event, ctx)``, an ``Event[...]`` annotation that contradicts
            ``model=`` or cannot be resolved; when the plugin module is imported.
    """
    if not binding_keys:
        raise ValueError("@handler needs at least one binding key")
    for key in binding_keys:
        check_binding_key(key)
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if timeout is not None and not _positive(timeout):
        raise ValueError("timeout must be positive")
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError("model must be a pydantic BaseModel subclass")
    published = _published(publishes)

    def register(func: HandlerFunc) -> Handler:
        if not callable(func):
            raise ValueError("@handler decorates a function")
        label = name or getattr(func, "__name__", None) or repr(func)
        check_signature(func, label)
        # The frame applying the decorator: a model defined next to a handler inside a
        # function resolves from its locals.
        caller = sys._getframe(1).f_locals
        return Handler(
            func=func,
            name=label,
            bindings=tuple(binding_keys),
            queue=queue,
            model=infer_model(func, label, explicit=model, localns=caller),
            retry=retry,
            concurrency=concurrency,
            timeout=timeout,
            retry_on=tuple(retry_on),
            give_up_on=tuple(give_up_on),
            single_active_consumer=single_active_consumer,
            idempotent=idempotent,
            publishes=published,
        )

    return register


def _published(
    entries: Iterable[str | tuple[str, type[BaseModel]]],
) -> tuple[tuple[str, type[BaseModel] | None], ...]:
    """``publishes=`` as (routing key, model or None) pairs, each key once.

    Raises:
        ValueError: an entry is neither a routing key nor a (routing key, model) pair, or a key
            is not valid (topic syntax: a ``*`` or ``#`` word stands for a family of keys).
    """
    if isinstance(entries, str | bytes):
        raise ValueError('publishes must list routing keys: publishes=["orders.shipped"]')
    result: dict[str, type[BaseModel] | None] = {}
    for entry in entries:
        pair = (entry, None) if isinstance(entry, str) else entry
        key, model = pair if isinstance(pair, tuple) and len(pair) == 2 else (None, None)
        if not isinstance(key, str) or not (
            model is None or (isinstance(model, type) and issubclass(model, BaseModel))
        ):
            raise ValueError(
                f"publishes entry {entry!r}: expected a routing key or a (routing key, Model) "
                f"pair with a pydantic model"
            )
        try:
            check_binding_key(key)
        except ValueError as exc:
            raise ValueError(f"publishes: {exc}") from None
        if key in result:
            raise ValueError(f"publishes lists {key!r} twice")
        result[key] = model
    return tuple(result.items())


class Middleware:
    """Code around every handling of a worker's handlers: subclass it and override the hooks
    you need (the others cost nothing). Registered in the ``eventworker.middleware``
    entry-point group and enabled, in order, by the ``middleware`` setting.

    One instance serves every handler and every concurrent handling of a worker process: keep
    what belongs to one event in local variables (of :meth:`around`), not in attributes.
    The first middleware listed is the outermost: its ``before`` runs first, its ``around``
    wraps all the others, and its ``after``, ``on_failure`` and ``on_outcome`` run last.
    """

    async def before(self, event: Event[Any], ctx: Context) -> None:
        """Before the handler runs (within its timeout). ``raise Reject(diagnosis)``
        dead-letters the event at once without running the handler, reason
        ``rejected_by_middleware``; any other exception fails the attempt as a handler's
        would (retried per policy)."""

    async def around(
        self, call: Callable[[], Awaitable[None]], event: Event[Any], ctx: Context
    ) -> None:
        """Wrap the handler: ``await call()`` runs the rest of the chain and the handler, and
        raises what it raised. Raising ``Reject`` here, outside ``call()``, is a rejection as in
        :meth:`before`; returning without calling it counts as the handler's success."""
        await call()

    async def after(self, event: Event[Any], ctx: Context) -> None:
        """The handler returned. An exception here is logged and changes nothing."""

    async def on_failure(self, event: Event[Any], ctx: Context, error: BaseException) -> None:
        """The attempt failed with ``error``: the handler (or a middleware's ``before`` or
        ``around``) raised, or it timed out (``HandlerTimeoutError``). Logged if it raises."""

    async def on_outcome(self, event: Event[Any], ctx: Context, outcome: object) -> None:
        """The delivery was settled: ``outcome`` is the decision from
        ``eventworker.worker.decisions`` (``Ack()``, ``RetryIn(delay)``,
        ``DeadLetter(reason)``, ``Duplicate()``, ``Requeue(reason)``). Also for events refused
        before the handler (``DeadLetter("schema_error")``...), not for a message whose AMQP header
        cannot be decoded (it never becomes an event). Logged if it raises."""

    @property
    def name(self) -> str:
        """How logs and diagnoses name it: its class name."""
        return type(self).__name__
