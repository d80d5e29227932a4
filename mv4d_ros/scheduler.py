"""Newest-set scheduling: one worker thread processes the newest complete set (no ROS import).

Input callbacks only synchronize; a complete set is handed to :meth:`LatestSetWorker.submit`, which
keeps **one** pending set. When the worker is busy and a newer set arrives, the pending one is
replaced and counted as ``superseded``: sets are never queued, so the output always follows the
newest input and latency stays at one processing time plus at most one wait, however slow the
engine is compared with the sensor rate. (Working through a queue oldest first, as a callback that
runs inference does with keep-last input queues, makes latency grow to the queue depth.)

:meth:`discard` drops the pending set (a clock jump: it belongs to the old timeline) and bumps
:attr:`generation`, which the processing function can read to reset its temporal state before the
next set (``process(item, generation)`` gets the generation the set was submitted in).
Exceptions of the processing function are passed to ``on_error`` and never stop the
worker.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class LatestSetWorker:
    """``submit(item)`` from any thread; ``process(item, generation)`` runs on the worker thread, one at a time."""

    def __init__(self, process: Callable[[Any, int], None], on_error: Callable[[BaseException], None] | None = None,
                 name: str = "mv4d_worker") -> None:
        self._process = process
        self._on_error = on_error
        self._name = name
        self._cv = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.submitted = 0
        self.superseded = 0
        self.discarded = 0
        self.processed = 0
        self.errors = 0

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        with self._cv:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Drop the pending set, let the running one finish, end the thread; True when it ended in time."""
        with self._cv:
            if self._has_pending:
                self.discarded += 1
            self._pending, self._has_pending = None, False
            self._stop = True
            self._cv.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        ended = not thread.is_alive()
        if ended:
            self._thread = None
        return ended

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy

    @property
    def pending(self) -> bool:
        with self._cv:
            return self._has_pending

    # ------------------------------------------------------------------ feeding
    def submit(self, item: Any) -> bool:
        """Make ``item`` the next set to process; True when it replaced (superseded) a pending one."""
        with self._cv:
            self.submitted += 1
            replaced = self._has_pending
            if replaced:
                self.superseded += 1
            self._pending, self._has_pending = (item, self.generation), True
            self._cv.notify_all()
            return replaced

    def discard(self) -> int:
        """Drop the pending set (if any) and start a new generation; returns how many were dropped (0/1)."""
        with self._cv:
            dropped = int(self._has_pending)
            self.discarded += dropped
            self._pending, self._has_pending = None, False
            self.generation += 1
            return dropped

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing is pending or running (tests, benchmarks, deactivation)."""
        import time

        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._has_pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._has_pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                (item, generation), self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._process(item, generation)
                self.processed += 1
            except BaseException as e:  # noqa: BLE001 - a failing set must not end the worker
                self.errors += 1
                if self._on_error is not None:
                    try:
                        self._on_error(e)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
