"""One agent out of a platform's list: the one with an id, or the only one with a name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from .errors import PlatformError


class Identified(Protocol):
    """A listed item with the platform's id for it."""

    @property
    def id(self) -> str: ...


A = TypeVar("A", bound=Identified)


def with_id(agents: Iterable[A], agent_id: str, platform: str) -> A:
    """The agent whose id is `agent_id`; a PlatformError naming `platform` when none is."""
    for agent in agents:
        if agent.id == agent_id:
            return agent
    raise PlatformError(f"{platform}: no agent with id {agent_id}")


def only_named(agents: Sequence[A], name: str, name_of: Callable[[A], str | None], platform: str) -> A | None:
    """The one agent named exactly `name` (None when no agent is); a PlatformError when several are."""
    named = [agent for agent in agents if name_of(agent) == name]
    if len(named) > 1:
        ids = ", ".join(agent.id for agent in named)
        raise PlatformError(f"{platform}: several agents are named {name!r} ({ids}); give the id instead")
    return named[0] if named else None
