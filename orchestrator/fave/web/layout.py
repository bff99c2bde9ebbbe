"""A layered drawing of a pipeline's DAG (left to right), computed from the shape recorded with the request.

state.json keeps ``pipeline.shape`` (``{stage: {"needs": [...], "for_each": "src.field" | None}}``), so the
request page draws the DAG the request was made with, without loading the pipeline file. A stage's column is
its longest path from a stage with no needs; within a column stages are ordered by the mean row of what they
need (one barycentre pass: a handful of stages need nothing cleverer), ties by the pipeline's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NODE_H", "NODE_W", "layout"]

NODE_W = 170
NODE_H = 64
GAP_X = 70
GAP_Y = 28
MARGIN = 16
TOP = 48
"""Room above the first row for the arcs of edges that skip a column."""


def _columns(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    column: dict[str, int] = {}

    def depth(name: str, trail: frozenset[str]) -> int:
        if name in column:
            return column[name]
        if name in trail:  # a cycle cannot be committed, but a drawing must not loop on a hand-edited file
            return 0
        deps = [d for d in needs.get(name, ()) if d in needs]
        column[name] = 1 + max((depth(d, trail | {name}) for d in deps), default=-1)
        return column[name]

    for name in order:
        depth(name, frozenset())
    return column


def layout(order: Sequence[str], shape: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Nodes with their box (``x``, ``y``, ``w``, ``h``) and edges with an SVG path, for stages ``order``
    (state.json's order) and ``shape`` (may be empty for an old state file: then no edges)."""
    needs: dict[str, list[str]] = {
        name: [str(d) for d in (shape.get(name, {}).get("needs") or []) if d in order] for name in order
    }
    column = _columns(order, needs)
    rank = {name: i for i, name in enumerate(order)}
    rows: dict[str, float] = {}
    by_column: dict[int, list[str]] = {}
    for name in order:
        by_column.setdefault(column[name], []).append(name)
    for col in sorted(by_column):

        def weight(name: str) -> tuple[float, int]:
            deps = [rows[d] for d in needs[name] if d in rows]
            return (sum(deps) / len(deps) if deps else float(rank[name]), rank[name])

        by_column[col].sort(key=weight)
        for i, name in enumerate(by_column[col]):
            rows[name] = float(i)
    tallest = max((len(names) for names in by_column.values()), default=0)
    height = TOP + MARGIN + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    nodes = []
    boxes: dict[str, tuple[int, int]] = {}
    for col, names in sorted(by_column.items()):
        used = len(names) * NODE_H + (len(names) - 1) * GAP_Y
        top = TOP + (height - TOP - MARGIN - used) // 2  # centre a short column against the tallest
        for i, name in enumerate(names):
            x, y = MARGIN + col * (NODE_W + GAP_X), top + i * (NODE_H + GAP_Y)
            boxes[name] = (x, y)
            for_each = shape.get(name, {}).get("for_each")
            nodes.append({"name": name, "column": col, "x": x, "y": y, "w": NODE_W, "h": NODE_H, "for_each": for_each})
    edges = []
    for name in order:
        for dep in needs[name]:
            (x1, y1), (x2, y2) = boxes[dep], boxes[name]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            if column[name] - column[dep] > 1:
                # Skipping a column: arc over the stages between instead of running through their boxes.
                lift = min(sy, ey) - NODE_H
                path = f"M{sx},{sy} C{sx + GAP_X},{lift} {ex - GAP_X},{lift} {ex},{ey}"
            else:
                mid = (sx + ex) // 2
                path = f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"
            edges.append({"from": dep, "to": name, "path": path})
    columns = max(column.values(), default=-1) + 1
    width = MARGIN * 2 + columns * NODE_W + max(columns - 1, 0) * GAP_X
    return {"nodes": nodes, "edges": edges, "width": width, "height": height}
