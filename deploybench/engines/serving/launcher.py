"""Keeps an engine server's whole process tree tied to the process that started it. Standard library only.

    python -I launcher.py OWNER_PID GRACE_S -- COMMAND...

`ServerProcess` runs this script in a new session, so the launcher leads a process group that the
server and everything it spawns (vLLM's engine core, its workers, multiprocessing's resource tracker)
inherit. The launcher:

- starts COMMAND as its child with `PR_SET_PDEATHSIG` = SIGKILL (the server's top process dies with the
  launcher, even by SIGKILL) and makes itself a child subreaper, so grandchildren orphaned by the
  server are re-parented here and reaped rather than adopted by init;
- polls its parent every 0.1 s: once the owner is gone (it died, even by SIGKILL, and the launcher was
  re-parented), it tears the group down; SIGTERM, SIGINT or SIGHUP to the launcher do the same;
- tears down by SIGTERM to the group, waiting up to GRACE_S for every member to exit, then SIGKILL to
  whatever remains; it exits with the server's exit status (0 when it stopped the server itself).

Polling `getppid` rather than setting PDEATHSIG on the launcher: PDEATHSIG fires when the *thread*
that forked the child exits, and an owner may start a server from a worker thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _server_preexec(launcher_pid: int):
    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher_pid:  # the launcher died between fork and prctl
            os._exit(1)

    return preexec


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # After the command name in parentheses: state ppid pgrp ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry))
    return members


def _reap() -> dict[int, int]:
    """Reap every exited child (the server and adopted orphans); {pid: wait status}."""
    done = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def _log(message: str) -> None:
    print(f"[deploybench launcher {os.getpid()}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    owner, grace = int(argv[0]), float(argv[1])
    command = argv[argv.index("--") + 1 :]
    me, pgid = os.getpid(), os.getpgid(0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    if os.getppid() != owner:
        _log(f"owner {owner} gone before the server started")
        return 1
    try:
        pid = os.fork()
        if pid == 0:  # the server's top process
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _server_preexec(me)()
                os.execvp(command[0], command)
            except BaseException as error:  # noqa: BLE001
                print(f"[deploybench launcher] cannot run {command[0]!r}: {error}", file=sys.stderr, flush=True)
            finally:
                os._exit(127)
    except OSError as error:
        _log(f"fork failed: {error}")
        return 1

    status = None
    reason = None
    while True:
        reaped = _reap()
        if pid in reaped:
            status = reaped[pid]
            reason = f"server exited ({_describe(status)})"
            break
        if stop:
            reason = f"signal {signal.Signals(stop[0]).name}"
            break
        if os.getppid() != owner:
            reason = f"owner {owner} died"
            break
        time.sleep(0.1)

    members = [p for p in group_members(pgid) if p != me]
    if members:
        _log(f"{reason}: stopping process group {pgid} ({len(members)} processes) with SIGTERM")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reaped = _reap()
            if pid in reaped and status is None:
                status = reaped[pid]
            members = [p for p in group_members(pgid) if p != me]
            if not members:
                break
            time.sleep(0.1)
        if members:
            _log(f"{len(members)} processes still alive after {grace:g} s: SIGKILL")
            for _ in range(50):
                for p in members:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
                _reap()
                members = [p for p in group_members(pgid) if p != me]
                if not members:
                    break
    _reap()
    if reason.startswith("server exited"):  # on its own: pass its status on
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    return 0 if stop else 1


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
