"""Draw a pipeline's DAG as text or as Mermaid."""

from __future__ import annotations

from fave.core.dag import Pipeline, Stage


def _label(stage: Stage) -> str:
    bits = [stage.mode, stage.function]
    if stage.for_each is not None:
        bits.append(f"for_each {stage.for_each}")
    if stage.max_concurrency is not None:
        bits.append(f"max {stage.max_concurrency}")
    return " · ".join(bits)


def render_text(pipeline: Pipeline) -> str:
    """One line per stage in run order, with what it needs; ``*`` marks the final stage."""
    lines = [f"pipeline {pipeline.name} ({pipeline.path.name})"]
    width = max(len(n) for n in pipeline.order)
    for name in pipeline.order:
        stage = pipeline.stages[name]
        needs = ", ".join(f"{n}[k]" if n in stage.item_needs else n for n in stage.needs) or "(start)"
        star = "*" if name == pipeline.final else " "
        lines.append(f"{star} {name:<{width}}  <- {needs:<28} {_label(stage)}")
    lines.append("[k]: joined item by item; * final stage (its output is final.json)")
    return "\n".join(lines)


def render_mermaid(pipeline: Pipeline) -> str:
    """A Mermaid flowchart: solid edges are barriers, dotted edges join item by item."""
    lines = ["flowchart TD"]
    for name in pipeline.order:
        stage = pipeline.stages[name]
        shape = ('[["', '"]]') if stage.fanned_out else ('["', '"]')
        lines.append(f"  {name}{shape[0]}{name}<br/>{_label(stage)}{shape[1]}")
    for name in pipeline.order:
        stage = pipeline.stages[name]
        for need in stage.needs:
            arrow = "-. per item .->" if need in stage.item_needs else "-->"
            lines.append(f"  {need} {arrow} {name}")
    lines.append(f"  style {pipeline.final} stroke-width:3px")
    return "\n".join(lines)
