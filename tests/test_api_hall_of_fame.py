"""The hall of fame holds rules that beat tuned AdamW (score 0), or says that none does (issue 32)."""

from __future__ import annotations

from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.known import ADAMW, LION, SIGNSGD
from primitives.library import ALL
from primitives.serialize import parse, to_dict
from search import config as config_module
from search.display import hall_of_fame_text
from search.events import CandidateEvaluated
from search.records import Stage, Status
from search.state import SearchState

SIGN_OF_MINUS_G = parse("""program sign_minus_g
  u0 = neg(g)
  u = sign(u0)
  return u
""")


def _config():
    return config_module.load(None, overrides=["tracking.enabled=false", "evolution.population=8"])


def _event(seq, id_, program, score):
    return CandidateEvaluated(
        seq=seq, id=id_, program=to_dict(program), structural_hash=structural_hash(program) + f"{id_:x}",
        fingerprint=fingerprint(program) + f"{id_:x}", parent=None, mutation="test", attempts=1, invalid=0,
        duplicates=0, stage=Stage.FULL, status=Status.OK, score=score, tasks={"t": {"score": score}}, complexity=3.0,
        state_buffers=1)


def _replayed(events):
    state = SearchState(_config(), ALL)
    for event in events:
        state.apply(event)
    return state


def test_a_useless_rule_on_the_trade_off_is_no_member():
    """u = sign(-g) at -2.17 is simpler than anything that scores better, but it is no discovery."""
    state = _replayed([_event(1, 0, SIGN_OF_MINUS_G, -2.17), _event(2, 1, LION, 0.4), _event(3, 2, ADAMW, 0.1)])
    assert {m.id for m in state.hall_of_fame.members} == {0, 1}  # the full front, as checkpoints record it
    assert [m.id for m in state.hall_of_fame.ranked()] == [1]
    text = hall_of_fame_text(state.hall_of_fame.ranked())
    assert "Pareto front of the rules that beat tuned AdamW" in text and "#0" not in text


def test_when_nothing_beats_adamw_the_hall_of_fame_is_the_best_candidate_and_says_so():
    state = _replayed([_event(1, 0, SIGN_OF_MINUS_G, -2.17), _event(2, 1, LION, -0.3), _event(3, 2, ADAMW, -0.1)])
    assert [m.id for m in state.hall_of_fame.ranked()] == [2]
    text = hall_of_fame_text(state.hall_of_fame.ranked())
    assert text.splitlines()[0] == ("hall of fame: no candidate beats tuned AdamW (score 0) yet; "
                                    "the best candidate so far:")
    # A candidate that scores exactly as AdamW does not beat it either.
    assert [m.id for m in _replayed([_event(1, 0, LION, 0.0)]).hall_of_fame.ranked()] == [0]


def test_the_hall_of_fame_is_rebuilt_the_same_from_the_same_events():
    events = [_event(1, 0, SIGN_OF_MINUS_G, -2.17), _event(2, 1, LION, 0.3), _event(3, 2, ADAMW, 0.3),
              _event(4, 3, SIGNSGD, 0.2)]
    first, second = _replayed(events), _replayed(events)
    assert [m.id for m in first.hall_of_fame.ranked()] == [m.id for m in second.hall_of_fame.ranked()]
    assert first.summary() == second.summary()
    assert all(m.score > 0 for m in first.hall_of_fame.ranked())
