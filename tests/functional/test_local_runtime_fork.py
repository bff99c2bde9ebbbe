"""LocalRuntime's environments forked from a warm interpreter (``fave.local.forkserver``, the default on Linux)
are what a fresh ``python -P worker.py`` would be: same variables, working directory, ``sys.path``, context,
exit statuses and timeouts, with the handler imported in each environment. Compared field by field with
``fork_environments=False`` on the real fixture handlers (tests/fixtures/runtime)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from fave.local import forkserver
from fave.local.runtime import LocalRuntime
from fave.local.template import Template

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="forking environments needs Linux pidfds")


def observe(template: Template, *, fork: bool) -> dict[str, Any]:
    """What the handlers see and how their environments end, with or without the fork server."""
    with LocalRuntime(template, env_overrides={"BUCKET": "b", "FROM_OVERRIDE": "o"}, fork_environments=fork) as rt:
        echo = rt.invoke_sync("Echo", {"x": 1}).payload
        counter = [rt.invoke_sync("Counter", {}).payload for _ in range(2)]
        exited = rt.invoke_sync("Crash", {"code": 7}).payload
        killed = rt.invoke_sync("Crash", {"signal": True}).payload
        timed_out = rt.invoke_sync("Sleepy", {"s": 3}).payload  # Timeout: 1
        after = rt.invoke_sync("Sleepy", {"s": 0}).payload
        stats = rt.stats()
        pids = [echo["pid"], counter[0]["pid"], after["pid"]]
    echo.pop("pid")
    for field in ("aws_request_id", "log_stream_name", "remaining_ms"):
        echo["context"].pop(field)
    return {
        "echo": echo,
        "counter": [(c["calls"], c["imports"]) for c in counter],
        "errors": [exited["errorType"], killed["errorType"], timed_out["errorType"]],
        "messages": [m["errorMessage"].split(" Error: ")[1] for m in (exited, killed, timed_out)],
        "after": after["slept"],
        "cold_starts": {name: s.cold_starts for name, s in stats.items() if s.cold_starts},
        "own_pids": all(pid != os.getpid() for pid in pids) and len(set(pids)) == 3,
    }


def test_forked_environments_behave_like_started_ones(runtime_template: Template) -> None:
    forked = observe(runtime_template, fork=True)
    started = observe(runtime_template, fork=False)
    assert forked == started
    assert forked["messages"] == [
        "Runtime exited with error: exit status 7",
        "Runtime exited with error: signal: killed",
        "Task timed out after 1.00 seconds",
    ]
    assert forked["counter"] == [(1, 1), (2, 1)]  # warm reuse: one import, state kept
    assert forked["own_pids"]


def test_closing_the_runtime_leaves_no_process_behind(runtime_template: Template) -> None:
    runtime = LocalRuntime(runtime_template, env_overrides={"BUCKET": "b"}, prewarm=["Echo"])
    pids = [runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"], runtime.invoke_sync("Echo", {}).payload["pid"]]
    forks = runtime._forks
    assert forks is not None and forks._zygote is not None
    zygote = forks._zygote.pid
    runtime.close()
    for pid in [*pids, zygote]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_killed_zygote_is_replaced_and_its_environments_still_end_cleanly(runtime_template: Template) -> None:
    with LocalRuntime(runtime_template, env_overrides={"BUCKET": "b"}) as runtime:
        warm = runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"]
        forks = runtime._forks
        assert forks is not None and forks._zygote is not None
        old = forks._zygote
        old.kill()
        old.wait()
        # The warm environment outlives its zygote; one killed for its timeout ends without it.
        assert runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"] == warm
        timed_out = runtime.invoke_sync("Sleepy", {"s": 3}).payload  # Timeout: 1
        assert timed_out["errorType"] == "Sandbox.Timedout"
        # A new environment comes from a new zygote.
        assert runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"] != warm
        assert forks._zygote is not old
        pids = [pid for pids in runtime.environment_pids().values() for pid in pids]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
