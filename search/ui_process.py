"""`optsearch ui`'s server process: started in a group of its own, and never outliving optsearch.

MLflow 3's server is a tree of processes (the server, uvicorn workers, a job
runner, huey_consumer processes), some of which leave its process group. They
are stopped three ways:
  - SIGINT, SIGTERM or SIGHUP to optsearch ui: forwarded to the server's group
    and to every descendant seen; what is there after a grace period is killed;
  - the server exits by itself: what it left is stopped the same way;
  - optsearch ui is killed (kill -9) and can forward nothing: a watchdog process
    (`python -m search.ui_process watch GROUP`, which ignores the terminal's
    signals) waits on a pipe that only optsearch ui holds open; the pipe closes
    when optsearch ui dies, however it dies, and the watchdog stops the tree.
Only the standard library is imported here: the watchdog starts in a blink and
holds no torch.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from primitives.errors import OptsearchError

GRACE_SECONDS = 10.0  # after Ctrl-C, SIGTERM or SIGHUP, what the MLflow server gets to close its port
STOP_SECONDS = 3.0  # then what is left of its processes gets to stop before it is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class UiError(OptsearchError):
    """The UI server cannot be started where it was asked to listen, or ended before it answered."""


def check_port(host: str, port: int) -> None:
    """Refuse, up front, a port this machine cannot listen on (one in use: another UI, another server)."""
    if _listening(host, port):
        raise UiError(f"port {port} on {host} is in use (another MLflow UI?); stop it, or choose another "
                      f"with --port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be listened on ({exc.strerror})"
            raise UiError(f"port {port} on {host} {why}; choose another with --port (or another --host)") from None


def serve(command: list[str], host: str, port: int, on_ready: Callable[[], None] | None = None,
          grace: float = GRACE_SECONDS) -> int:
    """Run a server in a process group of its own until it exits or this process gets SIGINT, SIGTERM or SIGHUP.

    on_ready is called once the server answers HTTP. A signal is forwarded to the whole group;
    what is still there `grace` seconds later, or at a second signal, is killed. Returns 0
    after a signal, else the server's exit status (UiError if it ended before it answered).
    """
    server = subprocess.Popen(command, start_new_session=True)
    group, seen, stopping = server.pid, set(), []
    watchdog = _start_watchdog(group)

    def forward(signum, _frame):
        stopping.append(time.monotonic())
        _signal(group, seen, signum if len(stopping) == 1 else signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    ready = on_ready is None
    try:
        while server.poll() is None:
            seen |= _processes(group)
            if stopping and (time.monotonic() - stopping[0] > grace or not _listening(host, port)):
                break  # the server has closed its port (MLflow's own process never exits by itself) or is late
            if not ready and _answers(host, port):
                ready = True
                on_ready()
            time.sleep(0.2)
    finally:
        seen |= _processes(group)
        _stop(server, seen, signal.SIGTERM, 0.0 if len(stopping) > 1 else min(grace, STOP_SECONDS))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if watchdog is not None:
            os.close(watchdog[0])  # the watchdog sees the pipe close and finds nothing left to stop
            watchdog[1].wait()
    if stopping:
        return 0
    if not ready:
        raise UiError(f"the MLflow UI ended (exit status {server.returncode}) before it answered on {host}:{port}")
    return server.returncode


def _start_watchdog(group: int) -> tuple[int, subprocess.Popen] | None:
    """A process that stops `group` and its descendants when this process dies: (the pipe's write end, it)."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)  # held by this process alone: its death closes the pipe
    try:
        watchdog = subprocess.Popen([sys.executable, "-m", "search.ui_process", "watch", str(group)], stdin=read_end,
                                    stdout=subprocess.DEVNULL)
    except OSError:
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    return write_end, watchdog


def watch(group: int) -> None:
    """The watchdog: note the server's descendants until stdin closes (optsearch ui is gone), then stop them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # Ctrl-C reaches the terminal's whole group: optsearch ui handles it
    seen: set[tuple[int, int]] = set()
    while True:
        seen |= _processes(group)
        readable, _, _ = select.select([sys.stdin.fileno()], [], [], 1.0)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break
    seen |= _processes(group)
    left = lambda: _group_alive(group) or bool(_alive(seen))  # noqa: E731
    if left():
        _signal(group, seen, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and left():
            time.sleep(0.1)
        _signal(group, seen, signal.SIGKILL)


def _answers(host: str, port: int) -> bool:
    """Whether an HTTP server answers on host:port (MLflow's /health; any HTTP status counts)."""
    import http.client

    connection = http.client.HTTPConnection(_connect_host(host), port, timeout=1.0)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connect_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(parent, process group, start time, state) of a process, from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[2]), int(fields[19]), fields[0]


def _processes(group: int) -> set[tuple[int, int]]:
    """(pid, start time) of the processes in `group` and of their descendants (Linux; empty elsewhere)."""
    if not os.path.isdir("/proc"):
        return set()
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            table[int(name)] = stat
    found = {pid for pid, (_, pgrp, _, _) in table.items() if pgrp == group}
    frontier = set(found) | {group}
    while frontier:
        frontier = {pid for pid, (ppid, _, _, _) in table.items() if ppid in frontier and pid not in found}
        found |= frontier
    return {(pid, table[pid][2]) for pid in found if pid in table}


def _alive(seen: set[tuple[int, int]]) -> set[int]:
    """Which of the processes seen still run (the same start time: not a reused pid; zombies are gone)."""
    alive = set()
    for pid, started in seen:
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[3] != "Z":
            alive.add(pid)
    return alive


def _signal(group: int, seen: set[tuple[int, int]], signum) -> None:
    for send, target in [(os.killpg, group)] + [(os.kill, pid) for pid in _alive(seen)]:
        try:
            send(target, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(server, seen: set[tuple[int, int]], signum, grace: float) -> None:
    """Ask what is left of the server's group and its descendants to stop; kill what is there after `grace`."""
    group, deadline = server.pid, time.monotonic() + grace

    def left() -> bool:
        server.poll()  # a zombie leader still counts as a member of its group until it is reaped
        return _group_alive(group) or bool(_alive(seen))

    if left():
        _signal(group, seen, signum)
    while time.monotonic() < deadline and left():
        time.sleep(0.1)
    if left():
        _signal(group, seen, signal.SIGKILL)
    server.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        watch(int(sys.argv[2]))
