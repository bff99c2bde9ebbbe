"""The two Orchestrator additions the function relies on: create with a given id, and settle."""

from __future__ import annotations

from fave.core.model import Cancel, RequestStatus
from fave.keys import INDEX_PREFIX
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import list_request_ids
from fave.service import Orchestrator
from fave_shared.store import LocalStore
from support.app_lambda import DEMO

REQUEST_ID = "01M7Q5CQG08V1KSN1NN13VDKQ9"


def test_create_with_an_id_is_idempotent_and_repairs_a_missing_index(local_store: LocalStore) -> None:
    store = local_store
    pipeline = load_local_pipeline(DEMO)
    first = Orchestrator(pipeline, store).create({"text": "a"}, start=False, request_id=REQUEST_ID)
    assert first.request_id == REQUEST_ID and first.status is RequestStatus.INIT
    store.delete(INDEX_PREFIX + REQUEST_ID)  # as if the first call died between its commit and the index

    again = Orchestrator(pipeline, store).create({"text": "other"}, start=False, request_id=REQUEST_ID)
    assert again.input["text"] == "a"  # the existing request wins
    assert list_request_ids(store) == [REQUEST_ID]


def test_settle_applies_until_the_inbox_stays_empty(local_store: LocalStore) -> None:
    orchestrator = Orchestrator(load_local_pipeline(DEMO), local_store, sync_submit=lambda call: call())
    assert orchestrator.settle() == {}
    state = orchestrator.create({"text": "a"}, start=False, request_id=REQUEST_ID)
    orchestrator.inbox.put((REQUEST_ID, Cancel("stop")))
    settled = orchestrator.settle()
    assert settled[REQUEST_ID].status is RequestStatus.CANCELLED and state.status is RequestStatus.INIT
    assert orchestrator.inbox.empty()
