"""The host agent's probe state machine, with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ananta.hostagent.probe import ProbeState, step

probes = st.lists(st.booleans(), max_size=40)
counts = st.integers(min_value=1, max_value=10)


def run(results: list[bool], rise: int, fall: int) -> list[ProbeState]:
    state, states = ProbeState(), []
    for ok in results:
        state = step(state, ok, rise, fall)
        states.append(state)
    return states


@given(probes, counts, counts)
def test_opinion_follows_the_last_rise_or_fall_run(results: list[bool], rise: int,
                                                   fall: int) -> None:
    states = run(results, rise, fall)
    for i, state in enumerate(states):
        # the settled opinion is the one of the last run long enough to count, if any
        expected = None
        run_value, run_length = None, 0
        for ok in results[: i + 1]:
            run_length = run_length + 1 if ok == run_value else 1
            run_value = ok
            if ok and run_length >= rise:
                expected = True
            elif not ok and run_length >= fall:
                expected = False
        assert state.settled is expected


@given(probes, counts, counts)
def test_an_opinion_changes_only_after_enough_probes_in_a_row(results: list[bool], rise: int,
                                                              fall: int) -> None:
    states = run(results, rise, fall)
    previous = ProbeState()
    for i, state in enumerate(states):
        if state.settled != previous.settled:
            needed = rise if state.settled else fall
            assert results[max(0, i - needed + 1): i + 1] == [bool(state.settled)] * needed
        previous = state


def test_statuses() -> None:
    s = ProbeState()
    assert s.status == "init"
    s = step(s, True, 2, 2)
    assert s.status == "init"
    s = step(s, True, 2, 2)
    assert s.status == "up"
    s = step(s, False, 2, 2)
    assert s.status == "falling" and s.settled is True
    s = step(s, False, 2, 2)
    assert s.status == "down"
    s = step(s, True, 2, 2)
    assert s.status == "rising" and s.settled is False
