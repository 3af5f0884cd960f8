"""What chaos_shims writes about each decision that fires: a log record, a JSON line, a count."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time

from chaos_shims.core.frozen import Frozen

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any, BinaryIO

logger = logging.getLogger("chaos_shims")

LIVE = "live"
DRY_RUN = "dry_run"

# Bound before any scenario can shift the wall clock: records carry real time.
_wall_clock = time.time


class InjectionRecord(Frozen):
    """One decision that fired, live or dry-run. Field names are the JSONL schema."""

    __slots__ = (
        "duration_ms",
        "exchange",
        "intensity",
        "mode",
        "op",
        "pid",
        "reason_code",
        "scenario",
        "seq",
        "target",
        "ts",
    )
    ts: float
    scenario: str
    mode: str
    reason_code: str
    intensity: float
    duration_ms: float
    exchange: str | None
    op: str | None
    target: str | None
    seq: int
    #: the process that decided: processes of one run append to one file and each counts its
    #: own seq (child processes included)
    pid: int

    def __init__(self, ts: float, scenario: str, mode: str, reason_code: str, intensity: float,
                 duration_ms: float, exchange: str | None, op: str | None, target: str | None,
                 seq: int, pid: int) -> None:
        set_field = object.__setattr__
        set_field(self, "ts", ts)
        set_field(self, "scenario", scenario)
        set_field(self, "mode", mode)
        set_field(self, "reason_code", reason_code)
        set_field(self, "intensity", intensity)
        set_field(self, "duration_ms", duration_ms)
        set_field(self, "exchange", exchange)
        set_field(self, "op", op)
        set_field(self, "target", target)
        set_field(self, "seq", seq)
        set_field(self, "pid", pid)

    def as_dict(self) -> dict[str, Any]:
        # Every field is a plain value: nothing to copy, unlike dataclasses.asdict.
        return {name: getattr(self, name) for name in self._fields}


def now_wall() -> float:
    return _wall_clock()


def log_record(record: InjectionRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "chaos %s %s %s exchange=%s op=%s intensity=%g",
            record.mode, record.scenario, record.reason_code, record.exchange, record.op,
            record.intensity, extra={"chaos": record.as_dict()},
        )


class JsonlSink:
    """Appends one JSON object per line, each with one unbuffered write, so a crash loses no
    written record.

    A write that fails (disk full, read-only) never reaches the host: the loss is logged once
    and counted in ``lost``; later records are still tried. A lost record is lost for good, so
    ``written`` and ``lost`` stay exact: nothing of it waits in a buffer to reach the file once
    space frees up (a buffered file did that, and its "lost" records turned up later), and a
    line the disk filled up in the middle of is ended before the next record is written.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self.lost = 0
        self._lock = threading.Lock()
        self._handle: BinaryIO | None = None
        self._reported = False
        #: the last write stopped in the middle of a line
        self._torn = False

    def write(self, record: InjectionRecord) -> None:
        import json  # here: only a process that writes a JSONL log pays for it

        line = (json.dumps(record.as_dict(), separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._handle is None:
                    directory = os.path.dirname(os.path.abspath(self.path))
                    os.makedirs(directory, exist_ok=True)
                    self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
                data = b"\n" + line if self._torn else line
                done = self._handle.write(data)
                if done is None or done < len(data):  # the disk filled up mid-line
                    if done:
                        self._torn = not data[:done].endswith(b"\n")
                    raise OSError(errno.ENOSPC, "short write: the disk is full")
                self._torn = False
                self.written += 1
            except OSError as exc:
                self.lost += 1
                if not self._reported:
                    self._reported = True
                    logger.error("chaos_shims: cannot write the JSONL log %s (%s); "
                                 "records are being lost, the host keeps running", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                with contextlib.suppress(OSError):
                    self._handle.close()
                self._handle = None
