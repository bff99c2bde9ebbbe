"""A deterministic driver for the pure engine: feed events, collect commands, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fave.core.dag import Pipeline
from fave.core.engine import Engine
from fave.core.model import Command, Event, Invoke, RequestState, TaskSucceeded


@dataclass
class Harness:
    pipeline: Pipeline
    now: float = 1000.0
    engine: Engine = field(init=False)
    state: RequestState = field(init=False)
    log: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(self.pipeline)
        self.state = self.engine.new_request("01JTESTREQUEST0000000000000", {"n": 5}, self.now)

    def send(self, event: Event) -> list[Command]:
        self.state, commands = self.engine.decide(self.state, event, self.now)
        self.log.extend(commands)
        return commands

    def invokes(self, commands: list[Command]) -> list[Invoke]:
        return [c for c in commands if isinstance(c, Invoke)]

    def succeed(self, inv: Invoke, output: Any = None) -> list[Command]:
        fanout = {}
        for spec in self.pipeline.stages.values():
            if spec.for_each is not None and spec.for_each.source == inv.stage:
                fanout[str(spec.for_each)] = tuple(spec.for_each.extract(output))
        return self.send(TaskSucceeded(inv.stage, inv.item, inv.attempt, output, fanout))
