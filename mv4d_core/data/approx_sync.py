"""Time synchronizers with the exact contract of ROS 2 Python ``message_filters``, without ROS.

:class:`ApproximateTimeSynchronizer` reproduces ``message_filters.ApproximateTimeSynchronizer``
(humble 4.3.5 / jazzy 4.11.2 / rolling 6.0.6 behave the same) step by step; this is *not* the C++
ApproximateTime policy. On arrival of message ``m`` with stamp ``t`` (ns) on input ``i``:

1. under the lock, ``queue_i[t] = m`` (an equal stamp overwrites, keeping its dict position);
   while ``queue_i`` holds more than ``queue_size`` entries its smallest stamp is deleted
   (possibly ``m`` itself);
2. for every other input ``j``: candidates = stamps ``s`` in ``queue_j`` with ``|s - t| <= slop``
   (inclusive), stably sorted by ``|s - t|`` (ties keep queue insertion order); if any input has
   none, stop;
3. walk the Cartesian product of the candidate lists in lexicographic order (first other input
   varies slowest), insert ``t`` at position ``i``, accept the first combination whose spread
   ``max - min`` is strictly ``< slop`` and whose stamps are all still queued;
4. call the callback with the messages in input order (still under the lock), delete the used
   stamps from every queue, stop.

``slop`` is converted like ``rclpy.duration.Duration(seconds=slop)``: ``int(slop * 1e9)`` ns.
Messages are fed with :meth:`add` (input index, message, header stamp in ns) instead of
subscriber filters; headerless input is the caller's business (pass a stamp). Counters for
emitted sets, evictions and failed arrivals make drops visible (ros2/message_filters#82).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

NS_PER_S = 1_000_000_000


def slop_to_ns(slop_s: float) -> int:
    """Seconds -> integer ns the way ``rclpy.duration.Duration(seconds=...)`` does (truncation)."""
    return int(slop_s * NS_PER_S)


@dataclass
class SyncCounters:
    """What happened to the messages fed in.

    * ``received[i]``: messages added on input ``i``.
    * ``emitted``: synchronized sets delivered.
    * ``evicted[i]``: messages pushed out of queue ``i`` by overflow (never part of a set).
    * ``overwritten[i]``: messages replaced by a later message with an equal stamp.
    * ``no_candidates``: arrivals where some other input had nothing within slop.
    * ``no_valid_combination``: arrivals with candidates everywhere but no set with spread < slop
      whose members were all still queued.
    * ``spreads_ns``: ``max - min`` stamp of each emitted set.
    """

    received: list[int]
    evicted: list[int]
    overwritten: list[int]
    emitted: int = 0
    no_candidates: int = 0
    no_valid_combination: int = 0
    spreads_ns: list[int] = field(default_factory=list)

    @classmethod
    def for_inputs(cls, n: int) -> "SyncCounters":
        return cls([0] * n, [0] * n, [0] * n)

    @property
    def dropped_by_eviction(self) -> int:
        return sum(self.evicted)

    @property
    def partial_sets(self) -> int:
        """Arrivals that did not complete a set (no candidates somewhere, or no valid combination)."""
        return self.no_candidates + self.no_valid_combination


class _SynchronizerBase:
    def __init__(self, num_inputs: int, queue_size: int, callback: Callable[..., Any] | None = None) -> None:
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.num_inputs = int(num_inputs)
        self.queue_size = int(queue_size)
        self.queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self.lock = threading.Lock()
        self.callbacks: list[Callable[..., Any]] = []
        if callback is not None:
            self.callbacks.append(callback)
        self.counters = SyncCounters.for_inputs(num_inputs)
        self.emitted_sets: list[tuple[int, ...]] | None = None  # stamps of each set when record_sets()

    def register_callback(self, callback: Callable[..., Any]) -> None:
        self.callbacks.append(callback)

    def record_sets(self) -> "_SynchronizerBase":
        """Also keep the stamp tuple of every emitted set in :attr:`emitted_sets` (for tests/tools)."""
        self.emitted_sets = []
        return self

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"input index {index} out of range for {self.num_inputs} inputs")

    def _store(self, queue: dict[int, Any], index: int, msg: Any, stamp_ns: int) -> None:
        if stamp_ns in queue:
            self.counters.overwritten[index] += 1
        queue[stamp_ns] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.counters.evicted[index] += 1

    def _emit(self, stamps: Sequence[int]) -> tuple:
        msgs = tuple(q[t] for q, t in zip(self.queues, stamps))
        self.counters.emitted += 1
        self.counters.spreads_ns.append(max(stamps) - min(stamps))
        if self.emitted_sets is not None:
            self.emitted_sets.append(tuple(stamps))
        for cb in self.callbacks:
            cb(*msgs)
        for q, t in zip(self.queues, stamps):
            del q[t]
        return msgs

    def pending(self) -> list[int]:
        """Messages still waiting in each queue (never emitted)."""
        return [len(q) for q in self.queues]


class ApproximateTimeSynchronizer(_SynchronizerBase):
    """Python ``message_filters.ApproximateTimeSynchronizer`` contract (see module docstring).

    ``add`` returns the emitted message tuple (input order) or ``None``; callbacks registered
    with the constructor / :meth:`register_callback` run under the lock, never in parallel.
    """

    def __init__(self, num_inputs: int, queue_size: int, slop_s: float,
                 callback: Callable[..., Any] | None = None) -> None:
        super().__init__(num_inputs, queue_size, callback)
        self.slop_ns = slop_to_ns(slop_s)

    def add(self, index: int, msg: Any, stamp_ns: int) -> tuple | None:
        self._check_index(index)
        t = int(stamp_ns)
        with self.lock:
            self.counters.received[index] += 1
            my_queue = self.queues[index]
            self._store(my_queue, index, msg, t)
            candidates: list[list[int]] = []
            for j, q in enumerate(self.queues):
                if j == index:
                    continue
                near = [(s, abs(s - t)) for s in q if abs(s - t) <= self.slop_ns]
                if not near:
                    self.counters.no_candidates += 1
                    return None
                near.sort(key=lambda sd: sd[1])  # stable: ties keep insertion order
                candidates.append([s for s, _ in near])
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                stamps.insert(index, t)
                if max(stamps) - min(stamps) < self.slop_ns and all(s in q for q, s in zip(self.queues, stamps)):
                    return self._emit(stamps)
            self.counters.no_valid_combination += 1
            return None
