"""mem_pressure: during ON the process holds a ballast of touched memory; during OFF it is freed.

The ballast is anonymous ``mmap`` memory with one byte written on every page, so the resident
set really grows (and the kernel really has to find the pages), and ``close()`` unmaps it, so
the resident set really falls back: memory from ``malloc`` might stay in the heap after a free.

Safety: a ballast is never more than ``SAFE_SHARE`` of the memory available when its phase
starts, read again at every start from ``/proc/meminfo`` (MemAvailable) and from the cgroup
limit when the process runs in a container (a host's MemAvailable knows nothing of a pod's
limit, and a cgroup over its limit is OOM-killed, not refused). It grows in chunks and stops as
soon as the memory available falls below what the cap leaves, so several processes growing at
once stop together.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import time

from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.faults import Fault
from chaos_shims.core.frozen import Frozen
from chaos_shims.core.registry import PhaseScenario
from chaos_shims.core.values import ValueKind

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

logger = logging.getLogger("chaos_shims")

NONE = "none"
#: Each level's ballast as a share of the memory available when its ON phase starts.
LEVEL_SHARES: dict[str, float] = {"low": 0.05, "medium": 0.15, "high": 0.30}
#: The most a ballast ever takes of the memory available at its phase start.
SAFE_SHARE = 0.5

PAGE = mmap.PAGESIZE
#: One mapping; the memory left is looked at again before each.
CHUNK_BYTES = 64 << 20
#: Pages are touched this much at a time, then the GIL is offered to the bot's threads: touching
#: holds it, and page faults cost about 0.7 s per GiB on a small VM.
TOUCH_BYTES = 2 << 20

_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
#: cgroup limits at or above this mean "no limit" (v1 writes a huge number instead of "max").
_NO_LIMIT = 1 << 60


# -- how much memory there is ------------------------------------------------------------------

def meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes: what the kernel can give without swapping (free + reclaimable)."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    # Free pages only (not reclaimable cache): smaller than MemAvailable, so on the safe side.
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    if text == "max":
        return _NO_LIMIT
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: str, name: str) -> int:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                field, _, value = line.partition(" ")
                if field == name:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_headroom(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process's cgroup (and every ancestor) can still grow before its memory limit,
    or None when no limit applies. Usage counts the working set (inactive page cache is
    reclaimable), as ``docker stats`` and the kubelet do."""
    try:
        with open(proc_cgroup, encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    candidates: list[tuple[str, str, str, str, str]] = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "" and os.path.exists(os.path.join(root, "cgroup.controllers")):
            # cgroup v2 (unified): one hierarchy at the root
            candidates.append((root, path, "memory.max", "memory.current", "inactive_file"))
        elif "memory" in controllers.split(","):
            candidates.append((os.path.join(root, "memory"), path, "memory.limit_in_bytes",
                               "memory.usage_in_bytes", "total_inactive_file"))
    headroom: int | None = None
    for base, path, limit_file, usage_file, inactive in candidates:
        # In a container the hierarchy is often mounted at the process's own cgroup, so the path
        # from /proc may not exist below the mount: walk from the deepest existing level up.
        directory = os.path.normpath(os.path.join(base, path.lstrip("/")))
        while True:
            limit = _read_int(os.path.join(directory, limit_file))
            usage = _read_int(os.path.join(directory, usage_file))
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                working_set = usage - _stat_value(os.path.join(directory, "memory.stat"), inactive)
                room = max(0, limit - max(0, working_set))
                headroom = room if headroom is None else min(headroom, room)
            if os.path.normpath(directory) == os.path.normpath(base) or len(directory) <= len(base):
                break
            directory = os.path.dirname(directory)
    return headroom


def available_memory() -> int | None:
    """The memory a ballast may draw on now: MemAvailable, no more than the cgroup allows."""
    system = meminfo_available()
    if system is None:
        system = _sysconf_available()
    container = cgroup_headroom()
    known = [value for value in (system, container) if value is not None]
    return min(known) if known else None


# -- the config value ------------------------------------------------------------------------

def format_bytes(size: int) -> str:
    """A size as a person writes it: 512MiB, 1.5GiB, 4096B."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.4g}{unit}"
    return f"{size}B"


class ByteSize(int):
    """An explicit ballast size in bytes that prints the way it is written (``512MiB``), so logs,
    ``chaos-shims config`` and artifacts stay readable; JSON still gets the plain number."""

    def __str__(self) -> str:
        return format_bytes(int(self))

    def __repr__(self) -> str:
        return f"ByteSize({int(self)})"


_ALLOWED = (
    "none, low, medium or high (5%, 15%, 30% of the memory available at each ON phase "
    "start), or a size: a number with a unit B, KB, MB, GB, TB (powers of 1000) or KiB, "
    "MiB, GiB, TiB (powers of 1024), e.g. 512MiB, 1.5GiB, 200MB; a bare number is bytes"
)


class MemoryPressureKind(ValueKind, Frozen):
    """A level (``none`` ``low`` ``medium`` ``high``) or an explicit size of the ballast."""

    __slots__ = ("allowed",)
    allowed: str

    def __init__(self, allowed: str = _ALLOWED) -> None:
        object.__setattr__(self, "allowed", allowed)

    def describe(self) -> str:
        return "none, low, medium, high, or a size (512MiB, 1.5GiB, 200MB)"

    def parse(self, key: str, raw: Any, source: str | None = None) -> str | int:
        if raw is None:
            return NONE
        if isinstance(raw, bool):
            raise self._reject(key, raw, source)
        if isinstance(raw, str) and raw.strip().lower() in (NONE, *LEVEL_SHARES):
            return raw.strip().lower()
        size = self._size(key, raw, source)
        if size == 0:
            return NONE
        self._check_cap(key, raw, size, source)
        return ByteSize(size)

    def _size(self, key: str, raw: Any, source: str | None) -> int:
        if isinstance(raw, int):
            number, factor = float(raw), 1
        elif isinstance(raw, float) and raw.is_integer():
            number, factor = raw, 1
        elif isinstance(raw, str) and (match := _SIZE.match(raw)):
            unit = match.group(2).lower() or "b"
            if unit not in _UNITS:
                raise self._reject(key, raw, source)
            number, factor = float(match.group(1)), _UNITS[unit]
        else:
            raise self._reject(key, raw, source)
        size = number * factor
        if number < 0 or (factor == 1 and not size.is_integer()):
            raise self._reject(key, raw, source)  # a fraction of a byte
        return int(size)

    def _check_cap(self, key: str, raw: Any, size: int, source: str | None) -> None:
        available = available_memory()
        if available is None:
            raise ChaosConfigError(
                key, raw, "a level (none, low, medium, high): the available memory of this "
                "system cannot be read (/proc/meminfo, sysconf), so no explicit size can be "
                "checked as safe",
                source=source)
        cap = int(available * SAFE_SHARE)
        if size > cap:
            raise ChaosConfigError(
                key, raw,
                f"at most {format_bytes(cap)}: a ballast never takes more than "
                f"{SAFE_SHARE:.0%} of the memory available ({format_bytes(available)} now, "
                f"the smaller of MemAvailable and the cgroup limit's headroom), so the bot "
                f"is not pushed into swap or the OOM killer; use a smaller size or a level "
                f"(low, medium, high)",
                source=source)


def is_level(value: Any) -> bool:
    return isinstance(value, str)


# -- the fault and the ballast ----------------------------------------------------------------

BALLAST = "memory_ballast"
#: memory got short while growing: the ballast stopped below its target
BACKED_OFF = "memory_ballast_backed_off"
#: the memory available could not be read: nothing is held
SKIPPED = "memory_ballast_skipped"


class MemoryBallast(Fault):
    """A ballast of ``size`` bytes held for one ON phase of ``phase_ms`` (0: always ON)."""

    __slots__ = ("code", "phase_ms", "size")
    size: int
    phase_ms: float
    code: str

    def __init__(self, size: int, phase_ms: float, code: str = BALLAST) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "phase_ms", phase_ms)
        object.__setattr__(self, "code", code)

    @property
    def reason_code(self) -> str:
        return self.code

    @property
    def intensity(self) -> float:
        return float(self.size)

    @property
    def duration_ms(self) -> float:
        return self.phase_ms


class Ballast:
    """Touched anonymous memory, grown in chunks and unmapped at once."""

    def __init__(self) -> None:
        self._chunks: list[mmap.mmap] = []

    @property
    def size(self) -> int:
        return sum(len(chunk) for chunk in self._chunks)

    def grow(self, target: int, floor: int, available: Callable[[], int | None]) -> int:
        """Grow to ``target`` bytes (in whole pages); stop early when what is available would
        fall below ``floor`` or the kernel refuses a mapping. Returns the size held."""
        while self.size < target:
            chunk = min(CHUNK_BYTES, _whole_pages(target - self.size))
            now = available()
            if now is None or now - chunk < floor:
                break
            try:
                mapping = mmap.mmap(-1, chunk)
            except (OSError, MemoryError, ValueError):
                break
            self._chunks.append(mapping)
            for start in range(0, chunk, TOUCH_BYTES):
                end = min(chunk, start + TOUCH_BYTES)
                mapping[start:end:PAGE] = b"\x01" * ((end - start + PAGE - 1) // PAGE)
                time.sleep(0)  # let the bot's threads run between slices
        return self.size

    def release(self) -> None:
        chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            chunk.close()


def _whole_pages(size: int) -> int:
    """``size`` rounded up to whole pages: what a mapping of it really holds."""
    return -(-size // PAGE) * PAGE


class MemPressure(PhaseScenario):
    key = "mem_pressure"
    summary = "ballast of touched memory held during ON (none, low, medium, high or a size)"
    simulates = ("a memory-hungry neighbour or a leak elsewhere in the process: less memory, "
                 "slower allocation and garbage collection, page-cache eviction, swap")
    kind = MemoryPressureKind()
    default = NONE
    patch_points = ()  # acts on the process itself: nothing to wrap
    surfaces = frozenset()

    def __init__(self, value: Any, settings: Any, stream: Any) -> None:
        super().__init__(value, settings, stream)
        self.ballast = Ballast()

    @classmethod
    def is_active_value(cls, value: Any) -> bool:
        return value not in (NONE, None, 0)

    def target(self, available: int) -> tuple[int, bool]:
        """The ballast for this phase and whether the cap cut it down."""
        cap = int(available * SAFE_SHARE)
        wanted = (int(available * LEVEL_SHARES[self.value]) if is_level(self.value)
                  else int(self.value))
        return _whole_pages(min(wanted, cap)), wanted > cap

    def start_phase(self, live: bool) -> Fault | None:
        on_sec = float(self.settings.get("burst_on_sec", 0) or 0)
        off_sec = float(self.settings.get("burst_off_sec", 0) or 0)
        phase_ms = on_sec * 1000.0 if on_sec > 0 and off_sec > 0 else 0.0
        available = available_memory()
        if available is None:
            logger.warning("chaos_shims mem_pressure: cannot read the memory available; "
                           "no ballast this phase")
            return MemoryBallast(0, phase_ms, SKIPPED)
        target, capped = self.target(available)
        if capped:
            logger.warning(
                "chaos_shims mem_pressure=%s: only %s available now; the ballast is capped at "
                "%s (%.0f%% of it)", self.value, format_bytes(available), format_bytes(target),
                SAFE_SHARE * 100)
        if not live:
            return MemoryBallast(target, phase_ms)
        # Stop growing once what is available falls below what the cap leaves of it; the
        # function is looked up at each call so tests can make memory short mid-growth.
        held = self.ballast.grow(target, available - int(available * SAFE_SHARE),
                                 lambda: available_memory())
        if held < target:
            logger.warning("chaos_shims mem_pressure: memory got short; holding %s of %s",
                           format_bytes(held), format_bytes(target))
            return MemoryBallast(held, phase_ms, BACKED_OFF)
        return MemoryBallast(held, phase_ms)

    def end_phase(self) -> None:
        self.ballast.release()
