"""Run-folder leases: at most one process trains or rolls out in a run folder at a time.

A lease is ``<run>/lease.json``::

    {"host": ..., "pid": ..., "pid_start": ..., "token": ..., "time": <last heartbeat, epoch s>,
     "acquired": ..., "job_id": ..., "purpose": "uwmbench run"}

- **Acquire**: the file is written complete under a temporary name and hard-linked to
  ``lease.json`` (``os.link`` fails if it exists: an atomic create, also on NFS).
- **Heartbeat**: a daemon thread rewrites ``time`` every ``heartbeat_s`` seconds (atomic replace).
- **Stale**: a lease whose heartbeat is older than ``timeout_s``, or whose process is gone on
  this host (a dead pid, or a pid reused by another process), or that a requeued incarnation of
  the same SLURM job finds on another host. A stale lease is taken over; a live one is refused
  with :class:`LeaseHeld`, whose message names the holder.
- **Safety**: every change other than the atomic create (take-over, heartbeat, release) happens
  under a short POSIX lock on ``<run>/.lease.lock`` and checks the lease's ``token`` first, so two
  processes that both find a stale lease cannot both take it over, and a process whose lease was
  taken over (it was paused for longer than the timeout) neither refreshes nor removes the new
  holder's lease: its heartbeat thread notices the loss and interrupts the main thread.

Use: ``with RunLease(run_dir, "uwmbench run"): ...`` (or ``run_lease(...)``).

Timings (seconds) default to ``UWMBENCH_LEASE_TIMEOUT_S`` (120) and ``UWMBENCH_LEASE_HEARTBEAT_S``
(15) from the environment.
"""
from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from uwmbench.config import ConfigError

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
LOCK_FILE = ".lease.lock"
_THREAD_LOCK = threading.RLock()  # POSIX locks do not exclude threads of one process


def default_timeout_s() -> float:
    return float(os.environ.get("UWMBENCH_LEASE_TIMEOUT_S", 120))


def default_heartbeat_s() -> float:
    return float(os.environ.get("UWMBENCH_LEASE_HEARTBEAT_S", 15))


class LeaseHeld(ConfigError):
    """The run folder is leased by another live process (the message names it)."""

    def __init__(self, msg: str, holder: dict[str, Any] | None = None):
        super().__init__(msg)
        self.holder = holder or {}


# ----------------------------------------------------------------------------- processes
def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot; with the pid, unique on a host)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` runs on this host (not a zombie; the same process if ``start`` is
    given)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OSError, ValueError, TypeError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return False
        return start is None or fields[19] == str(start)
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def _job_id() -> str | None:
    jid = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{jid}:{os.environ.get('SLURM_PROCID', '0')}" if jid else None


# ----------------------------------------------------------------------------- reading
def read_lease(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The lease of a run folder (None: none, or unreadable)."""
    try:
        return json.loads((Path(run_dir) / LEASE_FILE).read_text())
    except (OSError, ValueError):
        return None


def describe(info: dict[str, Any] | None, now: float | None = None) -> str:
    if not info:
        return "an unreadable lease"
    now = time.time() if now is None else now
    what = ", ".join(str(x) for x in (info.get("purpose"), info.get("job_id") and f"job {info['job_id']}") if x)
    out = f"pid {info.get('pid')} on host {info.get('host')}" + (f" ({what})" if what else "")
    out += f", last heartbeat {now - float(info.get('time') or 0):.0f} s ago"
    if info.get("acquired"):
        out += ", since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["acquired"])))
    return out


def judge(info: dict[str, Any] | None, timeout_s: float, mtime: float | None = None) -> tuple[bool, str]:
    """(stale, why) for a lease read from disk (None = unreadable, judged by its mtime)."""
    now = time.time()
    if info is None:
        age = now - (mtime or 0)
        return age > timeout_s, f"unreadable lease file, {age:.0f} s old"
    if info.get("host") == socket.gethostname() and not pid_alive(info.get("pid"), info.get("pid_start")):
        return True, f"its process {info.get('pid')} on this host is gone"
    age = now - float(info.get("time") or 0)
    if age > timeout_s:
        return True, f"its heartbeat is {age:.0f} s old (timeout {timeout_s:.0f} s)"
    jid = _job_id()
    if jid and info.get("job_id") == jid and info.get("host") != socket.gethostname():
        return True, f"it was taken by an earlier run of this SLURM job ({jid}) on {info.get('host')}"
    return False, "live"


# ----------------------------------------------------------------------------- the lease
class RunLease:
    """A lease on ``run_dir`` (see the module doc). ``acquire()`` raises :class:`LeaseHeld` when a
    live process holds it (after waiting up to ``wait_s`` for it to go stale or be released)."""

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "", timeout_s: float | None = None,
                 heartbeat_s: float | None = None, wait_s: float = 0.0,
                 on_lost: Callable[["RunLease"], None] | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEASE_FILE
        self.purpose = purpose
        self.timeout_s = default_timeout_s() if timeout_s is None else float(timeout_s)
        self.heartbeat_s = default_heartbeat_s() if heartbeat_s is None else float(heartbeat_s)
        if self.heartbeat_s >= self.timeout_s:
            raise ValueError(f"lease heartbeat ({self.heartbeat_s} s) must be shorter than its timeout "
                             f"({self.timeout_s} s)")
        self.wait_s = float(wait_s)
        self.on_lost = on_lost or _interrupt_main
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = False
        self.took_over: str | None = None  # why the previous lease was stale, when one was taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquired = 0.0
        self._created: list[Path] = []  # folders the lease created (removed on release if left empty)

    # ---- file helpers
    def _info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                "token": self.token, "time": time.time(), "acquired": self._acquired, "job_id": _job_id(),
                "purpose": self.purpose}

    def _write_tmp(self, info: dict[str, Any]) -> Path:
        tmp = self.run_dir / f".lease.{self.token}.{time.time_ns()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextlib.contextmanager
    def _locked(self, timeout: float = 60.0):
        with _THREAD_LOCK:
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                t0 = time.time()
                while True:
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        if time.time() - t0 > timeout:
                            raise TimeoutError(f"could not lock {self.run_dir / LOCK_FILE} in {timeout:.0f} s")
                        time.sleep(0.05)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _read(self) -> tuple[bool, dict[str, Any] | None, float | None]:
        """(exists, info or None if unreadable, mtime)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False, None, None
        return True, read_lease(self.run_dir), st.st_mtime

    # ---- acquire / release
    def try_acquire(self) -> tuple[bool, dict[str, Any] | None]:
        """One attempt: (acquired, the live holder's lease if refused)."""
        missing = [d for d in [self.run_dir, *self.run_dir.parents] if not d.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._created = self._created or missing
        self._acquired = time.time()
        for attempt in range(3):
            try:
                tmp = self._write_tmp(self._info())
                break
            except FileNotFoundError:  # an empty folder removed by a releasing holder meanwhile
                if attempt == 2:
                    raise
                self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)  # atomic create: fails if a lease exists
                    return True, None
                except FileExistsError:
                    pass
                with self._locked():
                    exists, cur, mtime = self._read()
                    if not exists:
                        continue  # released meanwhile: try the atomic create again
                    stale, why = judge(cur, self.timeout_s, mtime)
                    if not stale:
                        return False, cur or {}
                    log.warning("run folder %s: taking over a stale lease held by %s: %s", self.run_dir,
                                describe(cur), why)
                    self.took_over = why
                    os.replace(tmp, self.path)  # under the lock: nobody else can take it over too
                    return True, None
            raise RuntimeError(f"could not lease {self.run_dir}: lease.json keeps appearing and disappearing")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def acquire(self) -> "RunLease":
        t0 = time.time()
        while True:
            ok, holder = self.try_acquire()
            if ok:
                break
            if time.time() - t0 >= self.wait_s:
                raise LeaseHeld(f"run folder {self.run_dir} is in use: leased by {describe(holder)}; two processes "
                                f"may not train or roll out in one run folder (wait for it, stop it, or use "
                                f"another run_id/folder; a lease whose heartbeat is older than "
                                f"{self.timeout_s:.0f} s is taken over)", holder)
            time.sleep(min(max(1.0, self.heartbeat_s / 2), max(0.1, self.wait_s - (time.time() - t0))))
        self.held, self.lost = True, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat:{self.run_dir}", daemon=True)
        self._thread.start()
        log.debug("leased %s (token %s)", self.run_dir, self.token)
        return self

    def heartbeat(self) -> bool:
        """Refresh the lease's time now; False (and ``lost``) if another process holds it."""
        if not self.run_dir.is_dir():  # the folder was removed under us
            self.lost = True
            return False
        with self._locked():
            exists, cur, _ = self._read()
            if not exists or not cur or cur.get("token") != self.token:
                self.lost = True
                return False
            tmp = self._write_tmp(self._info())
            os.replace(tmp, self.path)
            return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                ok = self.heartbeat()
            except Exception as e:  # a transient file-system error: try again at the next beat
                log.warning("run folder %s: lease heartbeat failed: %s", self.run_dir, e)
                continue
            if not ok:
                holder = read_lease(self.run_dir)
                log.error("run folder %s: this process (pid %d) lost its lease (now: %s); stopping", self.run_dir,
                          os.getpid(), describe(holder) if holder else "no lease")
                if not self._stop.is_set():
                    self.on_lost(self)
                return

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.heartbeat_s))
        self.held = False
        try:
            with self._locked():
                exists, cur, _ = self._read()
                if exists and cur and cur.get("token") == self.token:
                    self.path.unlink()
                # a folder made only for the lease (the command then failed on bad input) is not left behind
                if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
                    (self.run_dir / LOCK_FILE).unlink()
                    for d in self._created:
                        try:
                            d.rmdir()
                        except OSError:  # not empty (or gone): keep it and its parents
                            break
        except OSError as e:  # the folder is gone: nothing to release
            log.debug("run folder %s: lease release: %s", self.run_dir, e)

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _interrupt_main(lease: RunLease) -> None:
    _thread.interrupt_main()  # KeyboardInterrupt in the main thread: stop writing to a folder we do not hold


def run_lease(run_dir: str | os.PathLike, purpose: str = "", **kw: Any) -> RunLease:
    """A :class:`RunLease` to use as a context manager. Inside a scheduler job (submitit) it
    waits up to the lease timeout for a lease left by a killed earlier attempt to go stale; on the
    command line it refuses at once."""
    if "wait_s" not in kw and (os.environ.get("SUBMITIT_EXECUTOR") or os.environ.get("SLURM_JOB_ID")):
        kw["wait_s"] = (kw.get("timeout_s") or default_timeout_s()) + (kw.get("heartbeat_s") or default_heartbeat_s())
    return RunLease(run_dir, purpose, **kw)
