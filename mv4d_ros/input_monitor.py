"""What /diagnostics says: per-input rates, ages and drops over a sliding window, and the status
rule (no ROS import, unit-testable with a fake clock).

Cumulative counters only ever grow, so a status computed from them stays WARN forever once anything
went wrong, and says nothing about an input that stopped. Here every arrival, drop and node event is
kept with its (monotonic) time for ``window_s``; the status is computed from the window alone:

* an input is **stale** when its newest message is older than ``timeout_s`` (or it never sent one
  while others did): it is named, the node's status is WARN;
* any drop in the window (late, lost in transport, evicted from the synchronizer, bad input, a set
  without odometry, ...) makes it WARN, with the causes and counts;
* inputs arriving but **no set completed** over a whole window, or an engine failure in the window,
  make it ERROR;
* LiDAR clouds processed without cameras (a fusion model once no set completes for
  ``lidar_only_after_s``) make it at least WARN, counted;
* a window with none of these is OK again: WARN and ERROR clear by themselves.

Levels are the ``diagnostic_msgs/DiagnosticStatus`` values (0 OK, 1 WARN, 2 ERROR).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

OK, WARN, ERROR = 0, 1, 2

#: Node events that are normal operation, never a problem (counted in the window, shown as values).
NORMAL_EVENTS = ("set_complete", "processed", "superseded", "skipped_no_subscriber", "lidar_only")


@dataclass
class _Input:
    name: str
    topic: str
    received: int = 0
    last_arrival_s: float | None = None
    last_stamp_ns: int | None = None
    arrivals: deque = field(default_factory=deque)          # monotonic seconds
    drops: deque = field(default_factory=deque)             # (seconds, cause, n)
    drop_totals: dict = field(default_factory=dict)
    incompatible: str = ""                                  # last incompatible-QoS report, cleared on arrival


@dataclass(frozen=True)
class InputWindow:
    """One input over the window: ``rate_hz``, ``age_s`` of the newest message (None: never one),
    drops in the window by cause, whether it is ``stale``."""

    name: str
    topic: str
    rate_hz: float
    age_s: float | None
    received: int
    drops: dict
    drop_totals: dict
    stale: bool
    incompatible: str = ""
    last_stamp_ns: int | None = None

    @property
    def level(self) -> int:
        return WARN if (self.stale or self.incompatible or sum(self.drops.values())) else OK

    @property
    def message(self) -> str:
        parts = []
        if self.incompatible:
            parts.append(f"incompatible QoS: {self.incompatible}")
        if self.age_s is None:
            parts.append("no message received yet")
        elif self.stale:
            parts.append(f"stale: no message for {self.age_s:.1f} s")
        if sum(self.drops.values()):
            parts.append("dropped " + ", ".join(f"{k}={v}" for k, v in sorted(self.drops.items())))
        return "; ".join(parts) or f"ok, {self.rate_hz:.1f} Hz"


@dataclass(frozen=True)
class Window:
    """A snapshot: the inputs, node events in the window (``set_complete``, ``processed``, problem
    causes, ...), the last detail of each problem cause, the window length and the time since start."""

    window_s: float
    timeout_s: float
    elapsed_s: float
    inputs: tuple[InputWindow, ...]
    events: dict
    details: dict

    def input(self, name: str) -> InputWindow:
        return next(i for i in self.inputs if i.name == name)


class InputMonitor:
    """Thread-safe recorder of arrivals, drops and events; :meth:`window` takes a snapshot."""

    def __init__(self, window_s: float, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0 or timeout_s <= 0:
            raise ValueError(f"window_s and timeout_s must be > 0, got {window_s}, {timeout_s}")
        self.window_s = float(window_s)
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.start_s = clock()
        self._lock = threading.Lock()
        self._inputs: dict[str, _Input] = {}
        self._events: deque = deque()                       # (seconds, cause, n)
        self._details: dict[str, str] = {}

    def add_input(self, name: str, topic: str = "") -> None:
        with self._lock:
            self._inputs.setdefault(name, _Input(name, topic or name))

    def restart(self) -> None:
        """Forget the window (and the start time): e.g. on lifecycle activation."""
        with self._lock:
            self.start_s = self.clock()
            self._events.clear()
            for k in list(self._inputs):
                old = self._inputs[k]
                self._inputs[k] = _Input(old.name, old.topic, drop_totals=old.drop_totals)

    # ------------------------------------------------------------------ recording
    def arrival(self, name: str, stamp_ns: int | None = None) -> None:
        now = self.clock()
        with self._lock:
            s = self._inputs[name]
            s.received += 1
            s.last_arrival_s = now
            s.incompatible = ""
            if stamp_ns is not None:
                s.last_stamp_ns = int(stamp_ns)
            s.arrivals.append(now)
            self._prune(s.arrivals, now)

    def drop(self, name: str, cause: str, n: int = 1) -> None:
        """``n`` messages of input ``name`` dropped for ``cause`` (late, message_lost, evicted, ...)."""
        if n <= 0:
            return
        now = self.clock()
        with self._lock:
            s = self._inputs[name]
            s.drops.append((now, cause, int(n)))
            s.drop_totals[cause] = s.drop_totals.get(cause, 0) + int(n)
            self._prune(s.drops, now)

    def incompatible_qos(self, name: str, detail: str) -> None:
        with self._lock:
            self._inputs[name].incompatible = detail

    def event(self, cause: str, n: int = 1, detail: str = "") -> None:
        """A node event: normal ones (:data:`NORMAL_EVENTS`) or a problem cause (``engine_error``, ...)."""
        if n <= 0:
            return
        now = self.clock()
        with self._lock:
            self._events.append((now, cause, int(n)))
            if detail:
                self._details[cause] = detail
            self._prune(self._events, now)

    def _prune(self, dq: deque, now: float) -> None:
        cut = now - self.window_s
        while dq and (dq[0] if isinstance(dq[0], float) else dq[0][0]) < cut:
            dq.popleft()

    # ------------------------------------------------------------------ snapshot
    def window(self) -> Window:
        now = self.clock()
        with self._lock:
            elapsed = now - self.start_s
            span = min(self.window_s, max(elapsed, 1e-9))
            any_arrival = any(s.last_arrival_s is not None for s in self._inputs.values())
            inputs = []
            for s in self._inputs.values():
                self._prune(s.arrivals, now)
                self._prune(s.drops, now)
                age = None if s.last_arrival_s is None else now - s.last_arrival_s
                never_while_others = age is None and (any_arrival or elapsed > self.timeout_s)
                stale = (age is not None and age > self.timeout_s) or never_while_others
                drops: dict[str, int] = {}
                for _, cause, n in s.drops:
                    drops[cause] = drops.get(cause, 0) + n
                inputs.append(InputWindow(s.name, s.topic, len(s.arrivals) / span, age, s.received, drops,
                                          dict(s.drop_totals), stale, s.incompatible, s.last_stamp_ns))
            self._prune(self._events, now)
            events: dict[str, int] = {}
            for _, cause, n in self._events:
                events[cause] = events.get(cause, 0) + n
            return Window(self.window_s, self.timeout_s, elapsed, tuple(inputs), events, dict(self._details))


def assess(w: Window, sync_inputs: list[str] | None = None, notes: list[str] | None = None) -> tuple[int, str]:
    """The node's status over window ``w``: ``(level, message)`` by the rule of the module docstring.

    ``sync_inputs``: the inputs a set needs (default: all); ``notes``: standing warnings (e.g. a
    LiDAR model without ``use_lidar``) that keep the level at least WARN."""
    names = set(sync_inputs) if sync_inputs is not None else {i.name for i in w.inputs}
    sync = [i for i in w.inputs if i.name in names]
    errors: list[str] = []
    warns: list[str] = list(notes or [])
    complete = w.events.get("set_complete", 0)
    arriving = [i for i in sync if i.age_s is not None and i.age_s <= w.window_s]
    stale = [i for i in w.inputs if i.stale]
    if w.events.get("engine_error"):
        detail = w.details.get("engine_error", "")
        errors.append(f"engine failed {w.events['engine_error']}x in the last {w.window_s:g} s"
                      + (f": {detail}" if detail else ""))
    if arriving and not complete and w.elapsed_s >= w.window_s:
        why = ""
        stale_sync = [i.name for i in stale if i.name in names]
        if stale_sync:
            why = f" (waiting for {stale_sync})"
        errors.append(f"inputs arrive but no set completed in the last {w.window_s:g} s{why}")
    if w.events.get("lidar_only"):
        warns.append(f"LiDAR-only: {w.events['lidar_only']} clouds processed without cameras in the last "
                     f"{w.window_s:g} s (no depth)")
    incompatible = [i for i in w.inputs if i.incompatible]
    if incompatible:
        warns.append("incompatible QoS: " + "; ".join(f"{i.name}: {i.incompatible}" for i in incompatible))
    never = [i.name for i in stale if i.age_s is None]
    old = [i for i in stale if i.age_s is not None]
    if never:
        warns.append(f"no messages from {never}")
    if old:
        warns.append("stale: " + ", ".join(f"{i.name} (no message for {i.age_s:.1f} s)" for i in old))
    drops: dict[str, int] = {}
    for i in w.inputs:
        for cause, n in i.drops.items():
            drops[cause] = drops.get(cause, 0) + n
    for cause, n in w.events.items():
        if cause not in NORMAL_EVENTS and cause != "engine_error":
            drops[cause] = drops.get(cause, 0) + n
    if drops:
        warns.append(f"in the last {w.window_s:g} s: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    if errors:
        return ERROR, "; ".join(errors + warns)
    if warns:
        return WARN, "; ".join(warns)
    if not any(i.age_s is not None for i in w.inputs):
        if w.elapsed_s > w.timeout_s:
            return WARN, f"no input received for {w.elapsed_s:.1f} s"
        return OK, "waiting for input"
    return OK, "ok"
