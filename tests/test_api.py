"""The Python front end: Search(...).fit(), as a notebook or a script uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search import Search
from search.config import ConfigError

ROOT = Path(__file__).parents[1]

SCRIPT = """
from search import Search
result = Search("smoke", max_evals=4, tracking=False, progress="bar", **{"evaluation.kind": "behaviour"}).fit()
frame = result.to_dataframe()
print("RESULT", result.stopped_by, result.counters.evaluated, len(frame), list(frame.columns)[:3])
"""


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_script_without_a_main_guard_runs_a_search_with_worker_processes(tmp_path, how):
    """Workers are spawned without re-running the caller's script (it has no `if __name__ == "__main__":`)."""
    (tmp_path / "script.py").write_text(SCRIPT)
    command = [sys.executable, "script.py"] if how == "file" else [sys.executable, "-"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          input=SCRIPT if how == "stdin" else None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT max_evals 4" in done.stdout
    assert "['id', 'score', 'held_out']" in done.stdout
    assert "[stopped: max_evals]" in done.stderr  # the tqdm bar
    assert len(list((tmp_path / "runs").iterdir())) == 1  # one run directory, not one per worker


def test_settings_are_keywords_or_dotted_keys_and_misspellings_are_errors():
    search = Search("smoke", max_evals=7, workers=1, seed=3, tracking=False, **{"evolution.population": 9})
    assert (search.config.stop.max_evals, search.config.workers.workers, search.config.seed) == (7, 1, 3)
    assert search.config.evolution.population == 9 and not search.config.tracking.enabled
    with pytest.raises(ConfigError, match="unknown setting"):
        Search("smoke", max_eval=7)
    with pytest.raises(ConfigError, match="did you mean"):
        Search("smoke", **{"evolution.populaton": 9})


def test_fit_returns_the_hall_of_fame_and_resume_continues(tmp_path):
    settings = {"evaluation.kind": "behaviour", "workers.serial": True}
    result = Search("smoke", max_evals=5, tracking=False, progress=False, run_dir=tmp_path, run_id="api",
                    **settings).fit()
    assert result.stopped_by == "max_evals" and result.run_dir == tmp_path / "api"
    assert result.hall_of_fame and result.to_dataframe()["score"].tolist() == [m.score for m in result.hall_of_fame]
    more = Search.resume(tmp_path / "api", max_evals=8, progress=False).fit()
    assert more.counters.evaluated == 8


def test_a_finished_run_loads_back_with_every_candidate_as_a_dataframe(tmp_path):
    from primitives.errors import OptsearchError
    from search.api import Result

    settings = {"evaluation.kind": "behaviour", "workers.serial": True}
    fitted = Search("smoke", max_evals=6, tracking=False, progress=False, run_dir=tmp_path, run_id="api",
                    **settings).fit()
    loaded = Result.load(tmp_path / "api")
    assert [m.id for m in loaded.hall_of_fame] == [m.id for m in fitted.hall_of_fame]
    assert loaded.counters == fitted.counters and loaded.best.id == fitted.best.id and loaded.seconds > 0

    frame = loaded.to_dataframe()
    assert list(frame.columns[:3]) == ["id", "score", "held_out"]
    assert frame["formula"].str.startswith("u = ").all() and frame["latex"].str.contains("aligned").all()
    assert frame.equals(fitted.to_dataframe())

    candidates = loaded.candidates()
    assert {"id", "status", "stage", "score", "held_out", "transfer", "formula", "latex", "score_behaviour"} <= \
        set(candidates.columns)
    assert len(candidates) >= fitted.counters.evaluated and candidates["id"].is_unique
    lion = candidates[candidates["mutation"] == "warm start lion"].iloc[0]
    assert lion["formula"] == "u = w*wd + sign(beta1*m + g*(1 - beta1)); m <- beta2*m + g*(1 - beta2)"
    assert lion["status"] == "ok" and lion["stage"] == "behaviour" and lion["score_behaviour"] == lion["score"]
    members = candidates.set_index("id").loc[[m.id for m in loaded.hall_of_fame]]
    assert members["score"].tolist() == [m.score for m in loaded.hall_of_fame]

    # A run directory is data: a damaged one is refused with the reader's one-line error.
    events = tmp_path / "api" / "events.jsonl"
    events.write_text(events.read_text().replace('"type":', '"type": "__import__(\'os\')", "x":', 1))
    with pytest.raises(OptsearchError):
        Result.load(tmp_path / "api")
