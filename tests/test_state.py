"""The search's parts without a worker: state transitions, scheduling, observers.

The state changes only by applying events; the scheduler turns proposals into
jobs and completions into events; observers see snapshots. Each is driven
here by hand: events written in the test, completions made up, a fake backend.
"""

from __future__ import annotations

import dataclasses
import io

import pytest

from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.known import ADAMW, LION, SIGNUM
from primitives.library import ALL
from primitives.serialize import to_dict
from search import config as config_module
from search.display import Display
from search.events import CacheHit, CandidateEvaluated, HeldOutRequested, HeldOutScored, Restarted, TransferScored
from search.funnel import Funnel
from search.observers import Observer, Snapshot
from search.proposer import Proposer
from search.records import Completion, Counters, JobKind, Stage, Status
from search.scheduler import Scheduler
from search.state import SearchState, StateError


def config(*overrides):
    return config_module.load(None, overrides=["tracking.enabled=false", "evolution.population=3",
                                                "evaluation.meta_every=2", *overrides])


def candidate(seq, id_, program=LION, score=0.5, stage=Stage.FULL, status=Status.OK, fp=None, **extra):
    return CandidateEvaluated(
        seq=seq, id=id_, program=to_dict(program), structural_hash=structural_hash(program) + f"{id_:x}",
        fingerprint=fp or f"{id_:016x}", parent=None, mutation="test", attempts=2, invalid=1, duplicates=0,
        stage=stage, status=status, score=score, tasks={"t": {"score": score}}, complexity=3.0, state_buffers=1,
        **extra)


def test_a_candidate_joins_population_and_hall_of_fame_and_counts():
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, score=0.5))
    assert [m.id for m in state.population.members] == [0] and state.hall_of_fame.member(0) is not None
    assert state.counters.evaluated == state.counters.trained == 1
    assert (state.counters.generated, state.counters.invalid) == (2, 1)
    assert state.best_score == 0.5 and state.next_id == 1


def test_a_failure_is_counted_and_never_selected():
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, status=Status.CRASHED, stage=Stage.FAILED, score=-3.0))
    assert state.counters.failed == state.counters.evaluated == 1
    assert len(state.population) == 0 and not state.hall_of_fame.members and 0 in state.recorded


def test_a_cache_hit_reuses_the_known_score_without_training():
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, score=0.7, fp="f" * 16))
    hit = CacheHit(seq=2, id=1, program=to_dict(SIGNUM), structural_hash="other", fingerprint="f" * 16,
                   parent=0, mutation="m", attempts=1, invalid=0, duplicates=3, same_as=0, stage=Stage.FULL, score=0.7)
    state.apply(hit)
    assert state.counters.fingerprint_hits == 1 and state.counters.evaluated == 1
    assert state.counters.structural_hits == 3
    assert [m.score for m in state.population.members] == [0.7, 0.7]


def test_the_hall_of_fame_keeps_the_front_and_drops_the_dominated():
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, program=ADAMW, score=0.1))  # complexity from the program: ADAMW is larger
    state.apply(candidate(2, 1, program=LION, score=0.5))
    assert {m.id for m in state.hall_of_fame.members} == {1}  # better and simpler: 0 leaves
    state.apply(candidate(3, 2, program=SIGNUM, score=0.2))  # worse but simpler: joins the front
    assert {m.id for m in state.hall_of_fame.members} == {1, 2}
    state.apply(candidate(4, 3, program=LION, score=0.3, stage=Stage.CHEAP))  # cheap-tier scores do not compete
    assert {m.id for m in state.hall_of_fame.members} == {1, 2}


def test_held_out_requests_come_every_meta_every_evaluations_and_scores_land_on_members():
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, score=0.5))
    assert state.held_out_due() == []  # 1 evaluation < meta_every = 2
    state.apply(candidate(2, 1, program=SIGNUM, score=0.2))
    due = state.held_out_due()
    assert sorted(due) == [0, 1]
    state.apply(HeldOutRequested(seq=3, ids=due))
    assert state.held_out_due() == [] and state.held_out_pending == {0, 1}
    state.apply(HeldOutScored(seq=4, id=0, score=-0.1, status=Status.OK, tasks={}))
    assert state.hall_of_fame.member(0).held_out == -0.1 and state.held_out_pending == {1}
    assert state.counters.held_out == 1


def test_a_plateau_restarts_from_the_best():
    state = SearchState(config("evolution.plateau=2"), ALL)
    state.apply(candidate(1, 0, score=0.9))
    state.apply(candidate(2, 1, score=0.1))
    assert not state.plateau()
    state.apply(candidate(3, 2, score=0.1))
    assert state.plateau()
    state.apply(Restarted(seq=4, best=0, score=0.9))
    assert [m.id for m in state.population.members] == [0] and state.counters.restarts == 1
    assert not state.plateau()
    with pytest.raises(StateError, match="in neither the population nor the hall of fame"):
        state.apply(Restarted(seq=5, best=7, score=0.0))


def test_a_plateau_restart_keeps_the_hall_of_fame_front_or_the_best_alone():
    state = SearchState(config("evolution.plateau=1"), ALL)
    state.apply(candidate(1, 0, program=LION, score=0.5))
    state.apply(candidate(2, 1, program=SIGNUM, score=0.2))  # simpler: on the front too
    state.apply(candidate(3, 2, program=ADAMW, score=0.1))  # dominated: not on the front
    assert state.restart_members() == [1, 0]  # the front, the best last
    state.apply(Restarted(seq=4, best=0, score=0.5, members=state.restart_members()))
    assert [m.id for m in state.population.members] == [1, 0]
    best_only = SearchState(config("evolution.plateau=1", "evolution.restart_from=best"), ALL)
    best_only.apply(candidate(1, 0, program=LION, score=0.5))
    best_only.apply(candidate(2, 1, program=SIGNUM, score=0.2))
    assert best_only.restart_members() == [0]


def test_events_must_follow_each_other_and_ids_are_recorded_once():
    state = SearchState(config(), ALL)
    with pytest.raises(StateError, match="expected 1"):
        state.apply(candidate(2, 0))
    state.apply(candidate(1, 0))
    with pytest.raises(StateError, match="recorded twice"):
        state.apply(candidate(2, 0))


def test_transfer_scores_rank_selection_when_asked():
    state = SearchState(config("transfer.enabled=true", "transfer.hurdle=0.0", "evaluation.select_on=transfer"), ALL)
    state.apply(candidate(1, 0, score=0.8))
    state.apply(candidate(2, 1, program=SIGNUM, score=0.4))
    state.apply(candidate(3, 2, program=ADAMW, score=-0.5))  # below the hurdle: not transferred
    assert sorted(state.transfer_due) == [0, 1]
    assert not state.hall_of_fame.members  # the front waits for transfer scores
    state.apply(TransferScored(seq=4, id=0, score=-1.0, status=Status.OK, tasks={}, drift=0.5))
    state.apply(TransferScored(seq=5, id=1, score=0.3, status=Status.OK, tasks={}, drift=0.0))
    assert state.population.best().id == 1  # ranked by the transfer score now
    assert {m.id for m in state.hall_of_fame.members} == {1}
    with pytest.raises(StateError, match="not due"):
        state.apply(TransferScored(seq=6, id=2, score=0.0, status=Status.OK, tasks={}))


# ---------------------------------------------------------------------------
# The scheduler, with completions made by hand


def _completion(job, result=None, status=Status.OK, reason=""):
    return Completion(job, status, result, reason, 0, 0.5, 1.0, 2.0)


def _scheduler(*overrides):
    cfg = config("evolution.warm_start=lion,signum", "evaluation.hurdle=0.0", *overrides)
    state = SearchState(cfg, ALL)
    proposer = Proposer(cfg, ALL, {"lion": LION, "signum": SIGNUM})
    return state, Scheduler(state, proposer, Funnel(cfg, has_full_stage=True))


def test_the_funnel_runs_as_separate_jobs_and_a_candidate_below_the_hurdle_stops():
    state, scheduler = _scheduler()
    first, second = scheduler.next_job(), scheduler.next_job()
    assert (first.kind, second.kind) == (JobKind.FINGERPRINT, JobKind.FINGERPRINT)
    assert scheduler.next_job() is None  # warm starts in flight, no population yet: nothing to mutate
    assert scheduler.complete(_completion(first, fingerprint(LION))) == []
    cheap = scheduler.next_job()
    assert cheap.kind is JobKind.CHEAP
    assert scheduler.complete(_completion(cheap, {"tasks": {"a": {"score": 0.4}}})) == []
    full = scheduler.next_job()
    assert full.kind is JobKind.FULL  # above the hurdle
    (event,) = scheduler.complete(_completion(full, {"tasks": {"b": {"score": 0.2}}, "diverged": []}))
    assert (event.stage, event.status, event.score) == (Stage.FULL, Status.OK, pytest.approx(0.3))
    assert event.warm_start == "lion" and event.seconds == 1.0  # both stages' worker time
    assert scheduler.complete(_completion(second, fingerprint(SIGNUM))) == []
    cheap = scheduler.next_job()
    (event,) = scheduler.complete(_completion(cheap, {"tasks": {"a": {"score": -0.4}}, "diverged": ["a"]}))
    assert (event.stage, event.status) == (Stage.CHEAP, Status.DIVERGED) and "diverged" in event.reason


def test_the_cheapest_waiting_work_goes_first_and_failures_are_recorded():
    state, scheduler = _scheduler()
    a, b = scheduler.next_job(), scheduler.next_job()
    scheduler.complete(_completion(a, fingerprint(LION)))
    cheap = scheduler.next_job()
    scheduler.complete(_completion(cheap, {"tasks": {"a": {"score": 0.4}}}))  # a FULL job waits now
    scheduler.complete(_completion(b, fingerprint(SIGNUM)))  # and a CHEAP job for the other
    assert [scheduler.next_job().kind for _ in range(2)] == [JobKind.CHEAP, JobKind.FULL]
    state2, scheduler2 = _scheduler()
    job = scheduler2.next_job()
    (event,) = scheduler2.complete(_completion(job, status=Status.TIMEOUT, reason="no result after 4s"))
    assert (event.stage, event.status, event.score, event.reason) == (Stage.FINGERPRINT, Status.TIMEOUT, -3.0,
                                                                      "no result after 4s")


def test_a_known_behaviour_is_a_cache_hit_and_the_budget_counts_work_in_progress():
    state, scheduler = _scheduler("stop.max_evals=2")
    state.apply(candidate(1, 0, program=ADAMW, score=0.1, fp=fingerprint(LION)))
    first = scheduler.next_job()
    (hit,) = scheduler.complete(_completion(first, fingerprint(LION)))
    assert isinstance(hit, CacheHit) and hit.same_as == 0 and hit.score == 0.1
    state.apply(dataclasses.replace(hit, seq=2))
    second = scheduler.next_job()
    assert second is not None and scheduler.next_job() is None  # 1 evaluated + 1 in progress = max_evals


class _Recorder(Observer):
    def __init__(self):
        self.calls = []

    def on_event(self, event, snapshot):
        self.calls.append((type(event).__name__, snapshot.counters.evaluated))


def test_observers_see_snapshots_the_engine_makes(tmp_path):
    from search.engine import run

    recorder = _Recorder()
    stream = io.StringIO()
    result = run(config("workers.serial=true", "evaluation.kind=behaviour", "evolution.warm_start=adamw",
                        "stop.max_evals=6"), run_dir=tmp_path / "run", observers=[recorder, Display(stream, live=False,
                                                                                                    log_every=3)])
    candidates = [count for name, count in recorder.calls if name == "CandidateEvaluated"]
    assert candidates == list(range(1, 7))  # each event seen once, after it was applied
    assert result.counters.evaluated == 6
    output = stream.getvalue()
    assert "[searching] evaluated 3/6" in output and "evaluated 6/6" in output and "ETA" in output
    assert "stopped: max_evals" in output


def test_the_display_gives_an_eta_from_the_budget_and_the_wall_time():
    from search.display import eta

    cfg = config("stop.max_evals=100", "stop.wall_time=60")
    counters = Counters(evaluated=10)
    snapshot = Snapshot("r", tmp := None, cfg, "searching", counters, 0.0, None, (), 10.0, 0)  # noqa: F841
    assert eta(snapshot) == pytest.approx(50.0)  # the wall time comes first (90 left at 1/s)
    assert eta(dataclasses.replace(snapshot, config=config("stop.max_evals=20"))) == pytest.approx(10.0)
