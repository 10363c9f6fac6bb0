"""Topic routing as RabbitMQ does it: does a routing key match a handler's binding keys?

A handler's work queue is bound with its binding keys, so normally every delivery matches. One
that does not came over a binding the handler no longer has (a key removed from ``@handler``
while the old binding stayed on the broker), or was put into the queue by name: nobody handles
it, and dispatch dead-letters it as ``no_handler`` instead of acking it away.

The patterns are compiled once per handler. Matching walks the words with a set of pattern
positions (an NFA), O(words x pattern words): a regular expression would backtrack
exponentially on keys like ``#.#.#.x``, and a producer chooses the routing key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bindings:
    """Compiled binding keys; ``matches(routing_key)`` is true when any of them matches."""

    keys: tuple[str, ...]
    _literal: frozenset[str]
    _patterns: tuple[tuple[str, ...], ...]

    def matches(self, routing_key: str) -> bool:
        if routing_key in self._literal:
            return True
        # RabbitMQ reads the empty key as no words at all, not as one empty word.
        words = routing_key.split(".") if routing_key else []
        return any(_match(pattern, words) for pattern in self._patterns)


def compile_bindings(keys: Iterable[str]) -> Bindings:
    """Compile topic binding keys (``*`` one word, ``#`` zero or more words)."""
    keys = tuple(keys)
    literal = frozenset(k for k in keys if not _wild(k))
    patterns = tuple(tuple(k.split(".")) for k in keys if _wild(k))
    return Bindings(keys, literal, patterns)


def _wild(key: str) -> bool:
    return any(word in ("*", "#") for word in key.split("."))


def _closure(pattern: tuple[str, ...], states: set[int]) -> set[int]:
    """Add the positions reachable by letting each ``#`` match zero words."""
    todo = list(states)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "#" and i + 1 not in states:
            states.add(i + 1)
            todo.append(i + 1)
    return states


def _match(pattern: tuple[str, ...], words: list[str]) -> bool:
    states = _closure(pattern, {0})
    for word in words:
        following: set[int] = set()
        for i in states:
            if i == len(pattern):
                continue
            if pattern[i] == "#":
                following.add(i)  # '#' takes this word and may take more
            elif pattern[i] in ("*", word):
                following.add(i + 1)
        if not following:
            return False
        states = _closure(pattern, following)
    return len(pattern) in states
