"""Built-in steps. ``HANDLERS`` maps a Plan step type to its handler."""

from __future__ import annotations

from collections.abc import Callable

from circlet.engine.steps.base import StepContext, StepHandler, StepOutcome

HANDLERS: dict[str, StepHandler] = {}


def register(step_type: str) -> Callable[[StepHandler], StepHandler]:
    """Decorator: register a handler for ``step_type``."""

    def wrap(fn: StepHandler) -> StepHandler:
        HANDLERS[step_type] = fn
        return fn

    return wrap


__all__ = ["HANDLERS", "StepContext", "StepHandler", "StepOutcome", "register"]
