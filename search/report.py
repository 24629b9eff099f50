"""What `optsearch show` and `optsearch leaderboard` print, as a table, JSON or CSV (nothing is written).

    summary(run_dir)            a run's statistics and hall of fame, as data
    candidate(run_dir, id)      one candidate (a cache hit's own id too), as data
    render(kind, data, format)  the text of either, or of leaderboard rows: table, json or csv
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from primitives.errors import OptsearchError
from search import replay
from search.display import hall_of_fame_text
from search.records import FAILED, finite_number


def summary(run_dir: str | Path, primitive_set_name: str | None = None) -> dict[str, Any]:
    """What `show` prints, as data: the run, its counters and its ranked hall of fame."""
    recorded = replay.load(run_dir, primitive_set_name=primitive_set_name, trusted=False)
    state, config = recorded.state, recorded.config
    candidates = [r for r in recorded.store.read_events() if r["type"] == "candidate"]
    scored = [e for e in candidates if e["status"] not in FAILED]
    best = max(scored, key=lambda e: e["score"]) if scored else None
    return {
        "run": recorded.run_id, "preset": config.preset, "seed": config.seed,
        "evaluated": state.counters.evaluated, "max_evals": config.stop.max_evals,
        "counters": state.counters.to_dict(), "cache_hit_rate": state.counters.cache_hit_rate,
        "status": dict(sorted(collections.Counter(e["status"] for e in candidates).items())),
        "stage": dict(sorted(collections.Counter(e["stage"] for e in candidates).items())),
        "best": None if best is None else {"id": best["id"], "score": best["score"], "mutation": best["mutation"]},
        "hall_of_fame": state.hall_of_fame.ranked(),
    }


def text(report: dict[str, Any]) -> str:
    c = report["counters"]
    lines = [
        f"run {report['run']} (preset {report['preset']}, seed {report['seed']})",
        f"  candidates evaluated {report['evaluated']} of {report['max_evals']}; behavioural cache hits "
        f"{c['fingerprint_hits']}",
        "  status: " + ", ".join(f"{k} {v}" for k, v in report["status"].items()),
        "  stage reached: " + ", ".join(f"{k} {v}" for k, v in report["stage"].items()),
    ]
    if report["best"] is not None:
        best = report["best"]
        lines.append(f"  best score {best['score']:+.3f} (#{best['id']}, {best['mutation']})")
    lines.append(f"  generated {c['generated']}, invalid {c['invalid']}, structural cache hits "
                 f"{c['structural_hits']}, failed {c['failed']}, restarts {c['restarts']}")
    lines.append(hall_of_fame_text(report["hall_of_fame"]))
    return "\n".join(lines)


FORMATS = ("table", "json", "csv")
MEMBER_FIELDS = ("id", "score", "held_out", "transfer", "complexity", "state_bytes", "state_buffers", "stage", "mutation",
                 "structural_hash", "program_text")
LEADERBOARD_FIELDS = ("rank", "score", "held_out", "transfer", "search", "candidate", "complexity", "state_buffers",
                      "hash", "name", "program")
TASK_FIELDS = ("task", "score", "lr", "train_loss", "eval_loss")


def member_record(member) -> dict[str, Any]:
    """A hall-of-fame member as plain data (its program as text and as JSON)."""
    data = member.to_dict()
    return {**{k: data[k] for k in MEMBER_FIELDS if k in data}, "stage": str(member.stage),
            "program_text": member.program.text(), "program": data["program"]}


class NoCandidate(OptsearchError):
    """A candidate id a run does not have."""


def candidate(run_dir: str | Path, candidate_id: int, primitive_set_name: str | None = None) -> dict[str, Any]:
    """One candidate of a run, by the id the live panel, show and export use (a cache hit's own id too)."""
    from primitives.serialize import from_dict
    from search.export import _ranges

    recorded = replay.load(run_dir, primitive_set_name=primitive_set_name, trusted=False)
    events = recorded.store.read_events()
    by_id = {e["id"]: e for e in events if e["type"] in ("candidate", "cache_hit")}
    if candidate_id not in by_id:
        raise NoCandidate(f"no candidate {candidate_id} in {run_dir} (candidates: {_ranges(sorted(by_id)) or 'none'})")
    event = by_id[candidate_id]
    scored = by_id.get(event["same_as"], event) if event["type"] == "cache_hit" else event
    later = {(e["type"], e["id"]): e for e in events if e["type"] in ("held_out", "transfer")}
    held_out, transfer = later.get(("held_out", scored["id"]), {}), later.get(("transfer", scored["id"]), {})
    return {"run": recorded.run_id, "id": candidate_id, "same_as": event.get("same_as"), "score": event["score"],
            "held_out": held_out.get("score"), "transfer": transfer.get("score"),
            "stage": event["stage"], "status": scored.get("status", ""), "reason": scored.get("reason", ""),
            "mutation": event["mutation"], "parent": event["parent"], "structural_hash": event["structural_hash"],
            "program_text": from_dict(event["program"], recorded.primitive_set).text(), "program": event["program"],
            "tasks": [{"task": task, "score": entry.get("score"), "lr": entry.get("lr"),
                       "train_loss": entry.get("train_loss"), "eval_loss": entry.get("eval_loss")}
                      for task, entry in scored.get("tasks", {}).items()],
            # Per task of the later stages; a transfer row adds the muP-carried rate and how far tuning moved it.
            "held_out_tasks": [{"task": task, "score": entry.get("score"), "lr": entry.get("lr"),
                                "eval_loss": entry.get("eval_loss")}
                               for task, entry in held_out.get("tasks", {}).items()],
            "transfer_tasks": [{"task": task, "score": entry.get("score"), "lr": entry.get("lr"),
                                "carried_lr": entry.get("carried_lr"), "drift": entry.get("drift"),
                                "steps": entry.get("steps"), "width_factor": entry.get("width_factor")}
                               for task, entry in transfer.get("tasks", {}).items()]}


def candidate_text(data: dict[str, Any]) -> str:
    origin = f", a behavioural cache hit of #{data['same_as']}" if data["same_as"] is not None else ""
    lines = [f"run {data['run']} candidate #{data['id']}{origin}",
             f"  score {data['score']:+.3f} ({data['stage']}, {data['status']}){_later(data)}",
             *([f"  reason: {data['reason'].strip().splitlines()[-1]}"] if data["reason"].strip() else []),
             f"  mutation {data['mutation']}; parent {_id(data['parent'])}; hash {data['structural_hash']}"]
    if data["tasks"]:
        lines.append("  task                     score        lr   eval loss")
        lines += [f"  {t['task']:<22} {_signed(t['score']):>7} {_g(t['lr']):>9} {_g(t['eval_loss']):>11}"
                  for t in data["tasks"]]
    if data["held_out_tasks"]:
        lines.append("  held-out task            score        lr   eval loss")
        lines += [f"  {t['task']:<22} {_signed(t['score']):>7} {_g(t['lr']):>9} {_g(t['eval_loss']):>11}"
                  for t in data["held_out_tasks"]]
    if data["transfer_tasks"]:
        lines.append("  transfer task            score        lr  carried lr  drift (decades)")
        lines += [f"  {_scaled_name(t):<22} {_signed(t['score']):>7} {_g(t['lr']):>9} {_g(t['carried_lr']):>11} "
                  f"{_g(t['drift']):>8}" for t in data["transfer_tasks"]]
    lines += ["  " + line for line in data["program_text"].splitlines()]
    return "\n".join(lines)


def _later(data: dict[str, Any]) -> str:
    return "".join(f", {label} {data[key]:+.3f}" for key, label in (("held_out", "held-out"), ("transfer", "transfer"))
                   if data[key] is not None)


def _scaled_name(row: dict[str, Any]) -> str:
    if row["steps"] is None or row["width_factor"] is None:
        return row["task"]
    return f"{row['task']} ({row['steps']} steps, {row['width_factor']}x)"


def _id(value) -> str:
    return "-" if value is None else f"#{value}"


def _g(value) -> str:
    """A recorded number, or "-" where there is none (or an event file was edited to hold something else)."""
    return f"{value:.3g}" if finite_number(value) else "-"


def leaderboard_text(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'':>4} {'score':>7} {'held-out':>8} {'transfer':>8}  candidate"]
    for rank, row in enumerate(rows, start=1):
        lines.append(f"{rank:>3}. {_signed(row['score']):>7} {_signed(row['held_out']):>8} "
                     f"{_signed(row['transfer']):>8}  {row['search']} #{row['candidate']}  ({row['hash']})")
        lines += ["       " + line for line in row["program"].splitlines()[1:]]
    return "\n".join(lines)


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.3f}"


# Fields whose text has lines of its own (a program, a traceback); every other string is one line.
MULTILINE = frozenset({"program_text", "reason", "program"})


def printable(text: str, lines: bool = False) -> str:
    """`text` with control characters (a terminal's escape sequences, bidi overrides, ...) written as escapes.

    Strings in a run directory or an MLflow store are anyone's: printed as they are, ESC [ ... could
    rewrite the terminal, and a newline forge a line of the table. lines: keep newlines (and tabs).
    """
    import unicodedata

    kept = "\n\t" if lines else ""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in kept or unicodedata.category(ch) == "Zs"
                   else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in text)


def _printable(value, key: str = ""):
    """Every string in `value` (keys too) made printable; objects (hall-of-fame members) as they are."""
    if isinstance(value, str):
        return printable(value, lines=key in MULTILINE)
    if isinstance(value, dict):
        return {_printable(k): _printable(v, k if isinstance(k, str) else "") for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v, key) for v in value]
    return value


def render(kind: str, data, output: str = "table") -> str:
    """kind: "show" (a summary), "candidate" or "leaderboard" (rows); output: table, json or csv.

    JSON escapes control characters itself; a table and CSV get them escaped (printable), and a
    CSV cell that a spreadsheet would run as a formula is quoted as text (_cell).
    """
    if output == "json":
        if kind == "show":
            data = {**data, "hall_of_fame": [member_record(m) for m in data["hall_of_fame"]]}
        elif kind == "leaderboard":
            data = [{"rank": rank, **row} for rank, row in enumerate(data, start=1)]
        return json.dumps(_plain(data), indent=1)
    data = _printable(data)  # one line per string where the table has one; hall-of-fame members: below
    if output == "csv":
        if kind == "show":
            rows = [{"run": data["run"], **member_record(m)} for m in data["hall_of_fame"]]
            return _csv(rows, ("run", *MEMBER_FIELDS))
        if kind == "candidate":
            return _csv(data["tasks"], TASK_FIELDS)
        return _csv([{"rank": rank, **row} for rank, row in enumerate(data, start=1)], LEADERBOARD_FIELDS)
    table = {"show": text, "candidate": candidate_text, "leaderboard": leaderboard_text}[kind](data)
    return printable(table, lines=True)  # what the objects (hall-of-fame members) wrote, too


def _plain(value):
    """JSON without NaN or Infinity (not JSON): a non-finite number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    """A header, then one line per row; a missing value is an empty field."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return out.getvalue().rstrip("\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def _cell(value) -> str:
    """A CSV field on one line: a program's lines joined with '; ', nothing for a missing value.

    A string a spreadsheet would evaluate (=HYPERLINK(...), +cmd, -2+3, @SUM) is prefixed with a
    single quote, the usual defence against CSV injection; numbers, negative ones too, stay numbers.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        if "\n" in value:
            value = "; ".join(line.strip() for line in value.splitlines() if line.strip())
        value = printable(value)
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return value
