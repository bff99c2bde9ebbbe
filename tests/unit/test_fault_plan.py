"""Fault specs and plans (fave.local.faults), and chaos's comparison helpers (fave.cli.chaos): no I/O."""

from __future__ import annotations

import pytest
from fave.cli.chaos import derive_seed, first_difference, strip_fields
from fave.invoke.base import RetryableInvocationError
from fave.local.faults import (
    KINDS,
    REPORT_PREFIX,
    FaultPlan,
    FaultSpec,
    InjectedCrash,
    parse_faults,
    parse_report,
    plan_from,
)
from fave_shared.errors import RetryableError, ValidationError

# -- the spec -----------------------------------------------------------------------------------------------


def test_the_documented_spec_parses() -> None:
    spec = parse_faults("duplicate=0.3,drop=0.05,delay=0-2s,crash_after_effect=0.01,throttle=0.1")
    assert spec == FaultSpec(duplicate=0.3, drop=0.05, delay=(0.0, 2.0), crash_after_effect=0.01, throttle=0.1)
    assert spec.active and spec.seed is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed=7", FaultSpec(seed=7)),
        (" drop = 5% , seed=0 ", FaultSpec(drop=0.05, seed=0)),
        ("delay=2s", FaultSpec(delay=(0.0, 2.0))),
        ("delay=500-800ms", FaultSpec(delay=(0.5, 0.8))),
        ("delay=100ms-1s", FaultSpec(delay=(0.1, 1.0))),
        ("delay=1-1.5", FaultSpec(delay=(1.0, 1.5))),
        ("throttle=1", FaultSpec(throttle=1.0)),
        ("", FaultSpec()),
        ("none", FaultSpec()),
        ("OFF", FaultSpec()),
    ],
)
def test_spec_forms(text: str, expected: FaultSpec) -> None:
    assert parse_faults(text) == expected


def test_nothing_to_inject_is_inactive() -> None:
    assert not FaultSpec().active
    assert not parse_faults("seed=3").active  # a seed alone injects nothing
    assert not parse_faults("drop=0,delay=0-0s").active
    assert parse_faults("delay=0-1ms").active


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("dup=0.3", "unknown key 'dup'"),
        ("drop=1.5", "key 'drop' must be a probability"),
        ("drop=-0.1", "key 'drop' must be a probability"),
        ("drop=nan", "key 'drop' must be a probability"),
        ("drop=often", "key 'drop' must be a probability"),
        ("throttle=120%", "key 'throttle' must be a probability"),
        ("delay=2s-1s", "key 'delay' has its low bound above"),
        ("delay=soon", "key 'delay' must be a range"),
        ("delay=-1s", "key 'delay' must be a range"),
        ("seed=1.5", "key 'seed' must be a whole number"),
        ("seed=-1", "key 'seed' must not be negative"),
        ("drop=0.1,drop=0.2", "key 'drop' given twice"),
        ("drop", "'drop' is not KEY=VALUE"),
        ("drop=0.1,,seed=1", "empty entry"),
    ],
)
def test_bad_specs_are_one_line_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_faults(text, source="FAVE_FAULTS")
    message = str(caught.value)
    assert message.startswith("FAVE_FAULTS: ") and names in message and "\n" not in message


def test_the_canonical_text_round_trips() -> None:
    spec = parse_faults("throttle=0.1,delay=250ms-2s,duplicate=0.3,crash_after_effect=0.01,drop=0.05,seed=9")
    assert parse_faults(str(spec)) == spec
    assert str(spec.with_seed(4)).endswith(",seed=4")
    assert str(FaultSpec()) == "none" and parse_faults(str(FaultSpec())) == FaultSpec()


def test_plan_from_reads_the_environment_only_when_not_given() -> None:
    assert plan_from(None, {}) is None
    assert plan_from(None, {"FAVE_FAULTS": "seed=3"}) is None  # nothing to inject: no plan, no hooks
    from_env = plan_from(None, {"FAVE_FAULTS": "drop=0.5,seed=3"})
    assert from_env is not None and from_env.spec == FaultSpec(drop=0.5, seed=3) and from_env.seed == 3
    assert plan_from("none", {"FAVE_FAULTS": "drop=0.5"}) is None  # --faults none beats the environment
    with pytest.raises(ValidationError, match=r"^FAVE_FAULTS: unknown key 'x'"):
        plan_from(None, {"FAVE_FAULTS": "x=1"})


# -- the plan -----------------------------------------------------------------------------------------------


def deliveries(plan: FaultPlan, n: int = 2000) -> list[tuple[float, ...]]:
    return [plan.delivery_delays(f"Fn/Success/stage/{i}/1") for i in range(n)]


def test_decisions_depend_on_the_seed_and_the_key_not_on_call_order() -> None:
    spec = FaultSpec(duplicate=0.3, drop=0.1, delay=(0.0, 2.0), throttle=0.2, seed=11)
    keys = [f"Fn/Success/stage/{i}/1" for i in range(300)]
    forward = {k: FaultPlan(spec).delivery_delays(k) for k in keys}
    plan = FaultPlan(spec)
    backward = {k: plan.delivery_delays(k) for k in reversed(keys)}
    assert forward == backward
    other = FaultPlan(spec.with_seed(12))
    assert {k: other.delivery_delays(k) for k in keys} != forward


def test_a_repeated_key_draws_again() -> None:
    plan = FaultPlan(FaultSpec(drop=0.5, seed=1))
    outcomes = {plan.delivery_delays("same") for _ in range(200)}
    assert outcomes == {(), (0.0,)}


def test_rates_are_honoured_and_counted() -> None:
    plan = FaultPlan(FaultSpec(duplicate=0.3, drop=0.1, seed=5))
    results = deliveries(plan, 5000)
    dropped = sum(1 for r in results if not r)
    doubled = sum(1 for r in results if len(r) == 2)
    assert 400 < dropped < 600  # 10% of 5000
    assert 1200 < doubled < 1500  # 30% of the 4500 delivered
    assert plan.counts() == {**dict.fromkeys(KINDS, 0), "drop": dropped, "duplicate": doubled}


def test_certain_and_impossible_faults() -> None:
    assert all(r == () for r in deliveries(FaultPlan(FaultSpec(drop=1.0)), 100))
    assert all(r == (0.0, 0.0) for r in deliveries(FaultPlan(FaultSpec(duplicate=1.0)), 100))
    never = FaultPlan(FaultSpec(delay=(0.0, 0.0), throttle=0.0, duplicate=0.0))
    assert all(r == (0.0,) for r in deliveries(never, 100)) and never.counts() == dict.fromkeys(KINDS, 0)


def test_delays_fall_in_the_range_each_copy_its_own() -> None:
    plan = FaultPlan(FaultSpec(duplicate=1.0, delay=(0.5, 0.8), seed=2))
    results = deliveries(plan, 500)
    delays = [d for r in results for d in r]
    assert all(0.5 <= d <= 0.8 for d in delays)
    assert sum(1 for a, b in results if a != b) > 450
    assert plan.counts()["delay"] == 1000 and plan.counts()["duplicate"] == 500


def test_throttle_raises_what_the_lambda_invoker_raises_for_429() -> None:
    plan = FaultPlan(FaultSpec(throttle=1.0))
    with pytest.raises(RetryableInvocationError) as caught:
        plan.throttle("ShoutFunction", "shout/1/1")
    assert isinstance(caught.value, RetryableError)
    assert "ShoutFunction" in str(caught.value) and "TooManyRequestsException (429)" in str(caught.value)
    FaultPlan(FaultSpec(throttle=0.0)).throttle("ShoutFunction", "shout/1/1")  # never
    assert plan.counts()["throttle"] == 1


def test_a_crash_in_process_raises_and_kills_the_plan() -> None:
    plan = FaultPlan(FaultSpec(crash_after_effect=1.0), crash="raise")
    assert not plan.dead
    with pytest.raises(InjectedCrash, match="task shard write"):
        plan.after_effect("task shard write (shout)")
    assert plan.dead and plan.crashed_after == "task shard write (shout)"
    with pytest.raises(InjectedCrash):  # whatever the dead driver tries next
        plan.check_alive()
    with pytest.raises(InjectedCrash):
        plan.after_effect("state.json commit")
    assert plan.counts()["crash_after_effect"] == 1
    assert not issubclass(InjectedCrash, Exception)  # `except Exception` in the driver does not swallow it


def test_crash_rate() -> None:
    plan = FaultPlan(FaultSpec(crash_after_effect=0.05, seed=8), crash="raise")
    crashed_at = None
    for n in range(1000):
        try:
            plan.after_effect("state.json commit")
        except InjectedCrash:
            crashed_at = n
            break
    assert crashed_at is not None and crashed_at < 200
    assert FaultPlan(FaultSpec(crash_after_effect=0.05, seed=8), crash="raise").seed == 8


def test_the_report_line_round_trips() -> None:
    plan = FaultPlan(FaultSpec(drop=1.0))
    plan.delivery_delays("k")
    line = plan.report_line()
    assert line.startswith(REPORT_PREFIX)
    assert parse_report(f"progress\n{REPORT_PREFIX}{{}}\n{line}\nafter") == {**dict.fromkeys(KINDS, 0), "drop": 1}
    assert parse_report("no report here") == dict.fromkeys(KINDS, 0)


# -- chaos helpers ------------------------------------------------------------------------------------------


def test_strip_fields_at_any_depth() -> None:
    value = {"text": "A", "attempts": [1, 2], "items": [{"pid": 3, "word": "a"}], "nested": {"pid": 1}}
    assert strip_fields(value, ["attempts", "pid"]) == {"text": "A", "items": [{"word": "a"}], "nested": {}}


def test_first_difference_names_the_path() -> None:
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) is None
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "final.a[1].b: 2 != reference 3"
    assert first_difference({"a": [1]}, {"a": [1, 2]}) == "final.a: 1 elements, the reference has 2"
    assert "final.c: missing here" in (first_difference({}, {"c": 1}) or "")


def test_seeds_differ_per_run_and_resume() -> None:
    seeds = {derive_seed(7, run, attempt) for run in range(1, 20) for attempt in range(20)}
    assert len(seeds) == 19 * 20
    assert derive_seed(7, 1, 0) == derive_seed(7, 1, 0)
