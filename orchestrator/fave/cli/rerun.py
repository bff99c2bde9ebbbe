"""``fave rerun ID [--dry-run] [--json]``: re-run only the stages of an ended request whose code, config or
inputs changed since they ran (the plan: ``fave.rerun``), then drive it to the end like ``fave resume``.

``--dry-run`` prints the plan and changes nothing: it takes no lease and writes nothing to the store.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from fave.cli.main import DEFAULT_PIPELINE, _finish, _json_out, _tell


def cmd_rerun(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import load_local_pipeline, open_any_store, store_uri
    from fave.rerun import check_same_stages
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)
    pipeline = load_local_pipeline(args.pipeline or doc["pipeline"] or DEFAULT_PIPELINE)
    # Before the state is loaded: loading refuses another shape too, but without naming the stage.
    check_same_stages(pipeline, args.request_id, doc["stages"])
    if args.dry_run:
        return _dry_run(args, pipeline, store)
    return _rerun(args, pipeline, store)


def _dry_run(args: argparse.Namespace, pipeline: Any, store: Any) -> int:
    from fave.local.orchestrator import local_orchestrator
    from fave.rerun import plan_rerun

    orchestrator = local_orchestrator(pipeline, store, faults="none")
    try:
        state = orchestrator.load(args.request_id)
        plan = plan_rerun(pipeline, state, orchestrator.fingerprints(state.profile))
    finally:
        orchestrator.close()
    if args.json:
        _json_out({**plan.to_json(), "dry_run": True})
        return 0
    if not plan.runs:
        print(f"request {plan.request_id} ({plan.status}): nothing to re-run")
    else:
        print(f"request {plan.request_id} ({plan.status}): {len(plan.runs)} of {len(plan.stages)} stages would run")
    for line in plan.lines():
        print(line)
    if plan.runs:
        given = f" --store {shlex.quote(args.store)}" if args.store else ""
        print(f"dry run: nothing changed; `fave rerun {plan.request_id}{given}` runs them")
    return 0


def _rerun(args: argparse.Namespace, pipeline: Any, store: Any) -> int:
    from fave.cli.main import _announce_faults, _report_faults
    from fave.cli.progress import terminal_progress
    from fave.cli.runlog import StoreLog, Tee
    from fave.local.orchestrator import local_orchestrator
    from fave.rerun import plan_rerun
    from fave.status import status_document

    log = StoreLog(store, "fave rerun")
    progress = Tee(terminal_progress(), log)
    orchestrator = local_orchestrator(pipeline, store, on_notify=progress.notify, faults=args.faults)
    _announce_faults(orchestrator)
    args.active_request = args.request_id  # for the Ctrl-C hint
    try:
        with orchestrator.hold(args.request_id):  # planned and applied as the one writer of the request
            state = orchestrator.load(args.request_id)
            plan = plan_rerun(pipeline, state, orchestrator.fingerprints(state.profile))
            if not plan.runs:
                if args.json:
                    _json_out({**status_document(store, args.request_id), "rerun": plan.to_json()})
                else:
                    print(f"request {plan.request_id} ({plan.status}): nothing to re-run")
                return 0
            _tell(f"request {plan.request_id}: re-running {', '.join(plan.runs)}")
            for line in plan.lines():
                _tell(line)
            log.begin(args.request_id)
            if plan.reset:
                orchestrator.reset(args.request_id, plan.reset, downstream=True)
            state = orchestrator.load(args.request_id)
            if not state.nothing_to_resume:
                state = orchestrator.resume(args.request_id)
            state = orchestrator.drive(args.request_id, on_step=progress)
    finally:
        progress.close()
        orchestrator.close()
        _report_faults(orchestrator)
    if args.json:
        from fave.cli.main import _exit_code

        doc = {**status_document(store, state.request_id), "rerun": plan.to_json()}
        _json_out(doc)
        return _exit_code(doc["status"])
    return _finish(store, state, False)
