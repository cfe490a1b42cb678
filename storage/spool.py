"""The writer's crash spool: rows queued for the database are also appended to a file of this
process in the data dir, so a killed process loses no finished call; the next start
replays the files of dead processes.

Layout: ``<dir>/<token>.lock`` is held with ``flock`` while the process lives, and rows go
to ``<dir>/<token>.<n>.jsonl``, one ``[kind, row]`` JSON line each. A finished call's row
is written to the file the moment it is queued, on the event loop, before the call's last
bytes go out (gateway/routes/chat.py finishes a call first): a plain ``write`` into the
kernel's page cache, which outlives the process however it dies, for a few µs. A thread
takes everything else queued since its last turn (audit rows, key touches, the started
records below), writes it, fsyncs the file (never the event loop, never per row; a machine
crash can lose that interval), then truncates or deletes what the writer has committed.

A call in progress is spooled too, as a small ``started`` record: if the process dies
before the call's row exists, the replay stores the call as failed instead of forgetting it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from storage.models import AuditLog, InferenceRequest
from storage.unstorable import describe, without_payload

log = logging.getLogger("gateway.writer")

# Queue item kinds that are table rows; "touch" is {"id": key id, "at": datetime}.
# WRITTEN marks a "request" row the event loop already wrote (``Spool.append``).
KIND_TABLES: dict[str, sa.Table] = {"request": InferenceRequest.__table__,  # type: ignore[dict-item]
                                    "audit": AuditLog.__table__}  # type: ignore[dict-item]

Item = tuple[str, dict[str, Any]]
WRITTEN = "written"
_DECODE_TABLES = {**KIND_TABLES, "started": KIND_TABLES["request"]}
STOPPED = "the gateway process stopped before the call finished"
# Calls whose end never reached the spool (a response never started never closes its
# call): beyond this many the oldest are forgotten, so such leaks stay bounded.
MAX_IN_FLIGHT = 100_000


_NEWLINE = orjson.OPT_APPEND_NEWLINE


def _default(value: Any) -> str:
    # asyncpg hands out its own UUID subclass, which orjson only serializes as uuid.UUID.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode(item: Item) -> bytes | None:
    """One spool line; a row orjson refuses is spooled without its payload (as the writer
    would store it), a row that still fails is logged and not spooled."""
    kind, row = item
    try:
        return orjson.dumps([kind, row], default=_default, option=_NEWLINE)
    except TypeError as exc:  # orjson.JSONEncodeError: nesting, non-JSON values
        table = KIND_TABLES.get(kind)
        if table is not None:
            try:
                return orjson.dumps([kind, without_payload(table, row, describe(exc))],
                                    default=_default, option=_NEWLINE)
            except TypeError:
                pass
        log.error("spool: cannot encode a %s row (%s); it is not crash-safe", kind, exc)
        return None


def decode(line: bytes) -> Item:
    """A spooled item with its UUIDs and datetimes back as Python objects."""
    kind, row = orjson.loads(line)
    table = _DECODE_TABLES.get(kind)
    if table is None:
        return kind, {"id": uuid.UUID(row["id"]), "at": datetime.fromisoformat(row["at"])}
    for name, value in row.items():
        if isinstance(value, str) and name in table.c:
            column_type = table.c[name].type
            if isinstance(column_type, sa.Uuid):
                row[name] = uuid.UUID(value)
            elif isinstance(column_type, sa.DateTime):
                row[name] = datetime.fromisoformat(value)
    return kind, row


def unfinished_row(started: dict[str, Any]) -> dict[str, Any]:
    """The row of a call the process died in: failed, with what was known at its start."""
    at = started["created_at"]
    return {"messages": [], "parameters": {}, "prompt": None, **started, "response": "",
            "tool_calls": None, "finish_reason": None, "status": "failed", "prompt_tokens": 0,
            "completion_tokens": 0, "total_tokens": 0, "tokens_estimated": False,
            "processing_time_ms": None, "time_to_first_token_ms": None, "error": STOPPED,
            "attempts": 1, "cost_usd": 0.0, "cached": False, "started_at": at,
            "completed_at": None, "updated_at": at}


class Spool:
    """This process's spool. ``append`` (event loop, per row) writes a finished call's row
    at once and queues anything else in memory; ``committed`` (event loop, per batch) says
    how many of the appended rows, in order, are in the database.

    One lock orders the loop's writes with the thread's: a line the loop wrote is always
    in a segment that is kept until its row is committed (the thread counts it before it
    truncates or rotates)."""

    def __init__(self, directory: Path, *, sync_seconds: float = 0.1,
                 segment_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self._sync_seconds = sync_seconds
        self._segment_bytes = segment_bytes
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pending: deque[Item] = deque()  # thread-safe append/popleft, no lock needed
        self._committed = 0  # rows committed, counted in append order (loop writes it)
        self._taken = 0  # rows taken from _pending by the thread, spooled or not needed
        self._closed: list[tuple[Path, int]] = []  # full segments, _taken at their end
        self._in_flight: dict[Any, bytes] = {}  # started calls not finished: their lines
        self._segment = 0
        self._path: Path | None = None
        self._fd = -1
        self._bytes = 0
        self._dirty = False  # written since the last fsync
        self._lock = threading.Lock()
        self._lock_fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        # It holds prompts and answers: private, like the database, whatever the umask.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        # Locked before it gets its name: a process starting beside us must never find our
        # lock file unlocked and take it for a dead process's.
        making = self.directory / f"{self._token}.lock.new"
        self._lock_fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, self.directory / f"{self._token}.lock")
        self._next_segment()
        self._thread = threading.Thread(target=self._run, name="writer-spool", daemon=True)
        self._thread.start()

    def append(self, item: Item) -> None:
        if item[0] != "request":
            self._pending.append(item)
            return
        line = encode(item)
        with self._lock:
            if line is not None and self._fd >= 0:
                try:
                    self._put([line])
                except OSError:
                    # Disk full or gone: the thread tries again, the row still goes to
                    # the database; only the crash window comes back.
                    log.exception("writer spool: cannot write %s", self._path)
                else:
                    item = (WRITTEN, item[1])
            self._pending.append(item)

    def started(self, row: dict[str, Any]) -> None:
        """A call began; its ``request`` row, appended when it ends, closes the record."""
        self._pending.append(("started", row))

    def committed(self, rows: int) -> None:
        self._committed += rows

    def close(self) -> int:
        """Spool what is left, and delete the files if everything is committed; returns the
        number of rows left in them for the next start to replay."""
        if self._thread is None:
            return 0
        self._stop.set()
        self._thread.join()
        self._thread = None
        left = max(0, self._taken - self._committed) + len(self._in_flight)
        with self._lock:
            os.close(self._fd)
            self._fd = -1  # later rows (none, once the writer stopped) stay in memory
        if left:
            log.warning("writer: %d rows not in the database (%d of unfinished calls) are "
                        "left in %s for the next start to replay", left,
                        len(self._in_flight), self.directory)
        else:
            for path, _ in self._closed:
                path.unlink(missing_ok=True)
            assert self._path is not None
            self._path.unlink(missing_ok=True)
            (self.directory / f"{self._token}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)  # releases the flock: from now on the files are a dead spool
        return left

    def _next_segment(self) -> None:
        self._segment += 1
        self._path = self.directory / f"{self._token}.{self._segment:06d}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._bytes = 0

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self._sync_seconds)
            try:
                self._sync()
            except OSError:
                # Disk full or gone: the rows still go to the database; only the crash
                # window is lost, so say so and keep trying.
                log.exception("writer spool: cannot write %s", self._path)
            if stopping:
                return

    def _sync(self) -> None:
        with self._lock:
            self._take_turn()
            fd, dirty, self._dirty = self._fd, self._dirty, False
        if dirty:
            os.fdatasync(fd)  # outside the lock: the loop keeps writing meanwhile

    def _take_turn(self) -> None:
        committed = self._committed
        items: list[Item] = []
        while True:
            try:
                items.append(self._pending.popleft())
            except IndexError:
                break
        # A call that started and ended since the last turn needs no started record: its
        # row is spooled already or in this very write (most non-streamed calls).
        ended = {row["id"] for kind, row in items if kind in ("request", WRITTEN)}
        lines: list[bytes] = []
        for item in items:
            kind, row = item
            if kind == "started":
                if row["id"] in ended:
                    continue
                line = encode(item)
                if line is not None:
                    self._in_flight[row["id"]] = line
                    lines.append(line)
                    if len(self._in_flight) > MAX_IN_FLIGHT:
                        del self._in_flight[next(iter(self._in_flight))]
                continue
            if kind in ("request", WRITTEN):
                self._in_flight.pop(row["id"], None)
            self._taken += 1
            if kind == WRITTEN or self._taken <= committed:
                continue  # in the file already, or in the database: nothing to protect
            line = encode(item)
            if line is not None:
                lines.append(line)
        self._put(lines)
        committed = self._committed
        while self._closed and self._closed[0][1] <= committed:
            self._closed.pop(0)[0].unlink(missing_ok=True)
        if self._bytes and committed >= self._taken and not self._in_flight:
            os.ftruncate(self._fd, 0)  # all of it is in the database
            self._bytes = 0
        elif self._bytes >= self._segment_bytes:
            os.fdatasync(self._fd)
            os.close(self._fd)
            assert self._path is not None
            self._closed.append((self._path, self._taken))
            self._next_segment()
            # Calls still running keep their record in the segment that outlives the old.
            self._put(list(self._in_flight.values()))

    def _put(self, lines: list[bytes]) -> None:
        """Write the lines (not synced: ``_sync`` does that); under the lock."""
        if not lines:
            return
        blob = b"".join(lines)
        data = memoryview(blob)
        while data:
            data = data[os.write(self._fd, data):]
        self._bytes += len(blob)
        self._dirty = True


class DeadSpool:
    """The files of a process that is gone, locked by us while we replay them."""

    def __init__(self, directory: Path, token: str, lock_fd: int) -> None:
        self.token = token
        self._lock_path = directory / f"{token}.lock"
        self._lock_fd = lock_fd
        self.segments = sorted(directory.glob(f"{token}.*.jsonl"))

    def items(self) -> list[Item]:
        """Every readable item; a line cut short by the crash is skipped."""
        items: list[Item] = []
        for path in self.segments:
            for line in path.read_bytes().splitlines():
                try:
                    items.append(decode(line))
                except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
                    log.warning("spool %s: skipped an unreadable line (%d bytes)", path.name,
                                len(line))
        return items

    def remove(self) -> None:
        for path in self.segments:
            path.unlink(missing_ok=True)
        self._lock_path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        os.close(self._lock_fd)


def dead_spools(directory: Path) -> Iterator[DeadSpool]:
    """Spools whose process is gone (their lock is free), each locked until removed or
    released, so two processes starting together never replay the same one."""
    if not directory.is_dir():
        return
    for lock_path in sorted(directory.glob("*.lock")):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # replayed and removed by another process just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live process
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)  # another process replayed it while we opened it
            continue
        yield DeadSpool(directory, lock_path.name.removesuffix(".lock"), fd)
