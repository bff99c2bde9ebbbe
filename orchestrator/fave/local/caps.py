"""Does a template reserve what its pipeline's ``functions:`` caps promise?

On AWS a pipeline's per-function cap (``functions: {F: {max_concurrency: N}}``, across every request) is
Lambda's ``ReservedConcurrentExecutions: N`` on F in the template: Lambda enforces it, throttling what exceeds
it. Locally the runtime enforces the cap itself (``LocalRuntime(function_caps=...)``), so a template that does
not reserve it would run fine here and unbounded once deployed. ``cap_problems`` says where the two disagree,
one line each, naming the function and what to set.
"""

from __future__ import annotations

from collections.abc import Mapping

from fave.local.template import Template

__all__ = ["cap_problems"]


def cap_problems(caps: Mapping[str, int], template: Template) -> list[str]:
    """For each capped function whose ReservedConcurrentExecutions in ``template`` is not its cap, why;
    empty when they agree. A reservation without a cap is not reported: a template may reserve concurrency
    for reasons of its own (another pipeline, an account-wide plan)."""
    problems: list[str] = []
    name = template.path.name
    for function, cap in sorted(caps.items()):
        spec = template.functions.get(function)
        if spec is None:
            problems.append(f"functions.{function}: no function {function} in {name}")
        elif spec.reserved_concurrency is None:
            problems.append(
                f"functions.{function}: max_concurrency {cap}, but {name} sets no ReservedConcurrentExecutions "
                f"on {function}: set it to {cap}, or Lambda runs it unbounded"
            )
        elif spec.reserved_concurrency != cap:
            problems.append(
                f"functions.{function}: max_concurrency {cap}, but {name} sets ReservedConcurrentExecutions "
                f"{spec.reserved_concurrency} on {function}: make them equal"
            )
    return problems
