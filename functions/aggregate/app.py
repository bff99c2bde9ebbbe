"""aggregate: rank the clips against the request's query and build the request's final result.

Joins split's clips with the per-clip transcribe and detect outputs, parses the query into objects and
spoken words (aggregate_query), scores every clip (aggregate_rank) and returns the scenes best first
plus a summary of every clip. A query that matches nothing gives ``scenes: []``; so does an empty one.
"""

from __future__ import annotations

from aggregate_contract import AggregateInput, AggregateOutput, ClipSummary, Links, Scene
from aggregate_query import parse_query
from aggregate_rank import ClipView, build_views, rank
from fave_shared.stage import StageContext, stage


@stage(AggregateInput)
def handler(inp: AggregateInput, ctx: StageContext) -> AggregateOutput:
    """Score and rank the clips; the result is stored by the orchestrator as metadata/final.json."""
    query = parse_query(inp.request.query)
    views = build_views(inp.needs, ctx.store.link)
    matches = rank(query, views)
    if inp.config.max_scenes is not None:
        matches = matches[: inp.config.max_scenes]
    scenes = [
        Scene(
            clip_index=m.clip.index,
            start_s=m.clip.start_s,
            end_s=m.clip.end_s,
            score=m.score,
            objects=m.objects,
            transcript=m.clip.transcript,
            matched_words=m.matched_words,
            links=_links(m.clip),
            evidence={**m.evidence, "attempts": m.clip.attempts},
        )
        for m in matches
    ]
    return AggregateOutput(
        request_id=ctx.request_id,
        query=inp.request.query,
        parsed_query=query.as_dict(),
        scenes=scenes,
        clips=[_summary(v) for v in views],
    )


def _links(view: ClipView) -> Links:
    return Links(clip=view.clip_link, keyframes=view.keyframe_links, transcript=view.transcript_link)


def _summary(view: ClipView) -> ClipSummary:
    return ClipSummary(
        index=view.index,
        start_s=view.start_s,
        end_s=view.end_s,
        objects=view.objects,
        transcript=view.transcript,
        speech_detected=view.speech_detected,
        links=_links(view),
        missing=view.missing,
        attempts=view.attempts,
    )
