"""ApproximateTimeSynchronizer against the ROS 2 Python message_filters contract.

The contract (ROS 2 message_filters' Python ApproximateTimeSynchronizer), restated as the test's specification. On arrival
of message m with stamp t on input i:
  S1 queue i stores m under t (an equal stamp replaces the old message, keeping its place);
     while queue i has more than queue_size entries, its smallest stamp is removed (maybe m);
  S2 for each other input j, candidates are queue-j stamps s with |s - t| <= slop, ordered by
     |s - t| with ties in queue insertion order; an input without candidates ends the arrival;
  S3 combinations are tried in lexicographic order of the candidate lists (first other input
     slowest) with t inserted at position i; the first one with max - min strictly < slop whose
     stamps are all still queued is emitted (messages in input order), its stamps are removed
     from every queue, and the search stops.
``RefApprox`` below implements these sentences literally (lists, recursion), independently of
the library's dict/itertools implementation; hypothesis compares both on random streams.
"""

from __future__ import annotations

import importlib.util
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer, slop_to_ns


class RefApprox:
    def __init__(self, n: int, queue_size: int, slop_ns: int) -> None:
        self.queues: list[list[list]] = [[] for _ in range(n)]  # [stamp, msg] in insertion order
        self.queue_size, self.slop = queue_size, slop_ns
        self.evicted = [0] * n

    @staticmethod
    def _has(queue, s) -> bool:
        return any(e[0] == s for e in queue)

    def _combos(self, lists, prefix=()):
        if not lists:
            yield prefix
            return
        for s in lists[0]:
            yield from self._combos(lists[1:], prefix + (s,))

    def add(self, i: int, msg, t: int):
        q = self.queues[i]
        for e in q:
            if e[0] == t:
                e[1] = msg
                break
        else:
            q.append([t, msg])
        while len(q) > self.queue_size:
            smallest = min(e[0] for e in q)
            q[:] = [e for e in q if e[0] != smallest]
            self.evicted[i] += 1
        lists = []
        for j, other in enumerate(self.queues):
            if j == i:
                continue
            cand = [e[0] for e in other if abs(e[0] - t) <= self.slop]
            if not cand:
                return None
            lists.append(sorted(cand, key=lambda s: abs(s - t)))  # sorted() is stable
        for combo in self._combos(lists):
            stamps = list(combo[:i]) + [t] + list(combo[i:])
            if max(stamps) - min(stamps) < self.slop and all(self._has(qq, s) for qq, s in zip(self.queues, stamps)):
                msgs = []
                for qq, s in zip(self.queues, stamps):
                    msgs.append(next(e[1] for e in qq if e[0] == s))
                    qq[:] = [e for e in qq if e[0] != s]
                return tuple(msgs)
        return None


streams = st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(1, 5), st.sampled_from([0, 10, 20, 25, 50]),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 40).map(lambda k: k * 5)), max_size=60)))


@settings(max_examples=400, deadline=None)
@given(streams)
def test_approximate_matches_reference_statement(spec):
    n, queue_size, slop_ms, events = spec
    slop_ns = slop_ms * 1_000_000
    sut = ApproximateTimeSynchronizer(n, queue_size, slop_ms / 1000)
    assert sut.slop_ns == slop_ns
    ref = RefApprox(n, queue_size, slop_ns)
    emitted = 0
    for k, (i, stamp_ms) in enumerate(events):
        msg = ("m", k)  # unique objects so replaced messages are told apart
        got = sut.add(i, msg, stamp_ms * 1_000_000)
        want = ref.add(i, msg, stamp_ms * 1_000_000)
        assert got == want, f"event {k}: {got} != {want}"
        emitted += want is not None
    assert sut.counters.emitted == emitted
    assert sut.counters.evicted == ref.evicted
    assert sut.pending() == [len(q) for q in ref.queues]
    assert sum(sut.counters.received) == len(events)


def test_slop_boundaries_candidate_inclusive_spread_strict():
    s = ApproximateTimeSynchronizer(2, 10, 0.1)
    s.add(0, "a0", 0)
    assert s.add(1, "b", 100_000_000) is None           # |dt| == slop: candidate, but spread == slop: rejected
    assert s.counters.no_valid_combination == 1
    assert s.add(1, "b2", 99_999_999) == ("a0", "b2")  # spread < slop
    assert s.counters.spreads_ns == [99_999_999]


def test_closest_candidate_wins_and_ties_keep_insertion_order():
    s = ApproximateTimeSynchronizer(2, 10, 0.05)
    s.add(0, "late", 1_020_000_000)
    s.add(0, "early", 980_000_000)       # same |dt| as "late" w.r.t. 1.0 s, inserted after it
    s.add(0, "near", 1_030_000_000)
    assert s.add(1, "b", 1_000_000_000) == ("late", "b")
    assert s.pending() == [2, 0]


def test_lexicographic_order_first_other_input_slowest():
    s = ApproximateTimeSynchronizer(3, 10, 0.1).record_sets()
    s.add(1, "b_far", 90_000_000)
    s.add(1, "b_near", 10_000_000)
    s.add(2, "c_far", -60_000_000)
    s.add(2, "c_near", 5_000_000)
    # candidates for t=0: input1 [10ms, 90ms], input2 [5ms, -60ms]; first combo (10, 5) is accepted
    assert s.add(0, "a", 0) == ("a", "b_near", "c_near")
    s2 = ApproximateTimeSynchronizer(3, 10, 0.1).record_sets()
    s2.add(1, "b1", 40_000_000)
    s2.add(1, "b2", -50_000_000)
    s2.add(2, "c1", -55_000_000)
    # combos: (40, -55) spread 95 ms ok -> accepted before (-50, -55)
    assert s2.add(0, "a", 0) == ("a", "b1", "c1")
    assert s2.emitted_sets == [(0, 40_000_000, -55_000_000)]


def test_overflow_evicts_oldest_even_the_new_message():
    ms = 1_000_000
    s = ApproximateTimeSynchronizer(2, 2, 0.05)
    s.add(0, "a1", 100 * ms)
    s.add(0, "a2", 200 * ms)
    assert s.add(0, "a_old", 50 * ms) is None  # smallest stamp: evicted on arrival
    assert s.counters.evicted == [1, 0] and sorted(s.queues[0]) == [100 * ms, 200 * ms]
    assert s.add(1, "b", 50 * ms) is None      # a_old is gone; a1 is exactly slop away -> spread not < slop
    assert s.add(1, "b2", 140 * ms) == ("a1", "b2")
    assert s.pending() == [1, 1]


def test_only_sets_containing_the_new_message_are_emitted():
    s = ApproximateTimeSynchronizer(2, 10, 0.01)
    s.add(0, "a", 0)
    s.add(1, "b_far", 500_000_000)
    s.add(0, "a2", 1_000_000_000)
    assert s.counters.emitted == 0 and s.pending() == [2, 1]


def test_equal_stamp_overwrites_and_is_counted():
    s = ApproximateTimeSynchronizer(2, 10, 0.01)
    s.add(0, "first", 5)
    s.add(0, "second", 5)
    assert s.counters.overwritten == [1, 0]
    assert s.add(1, "b", 5) == ("second", "b")


def test_callback_runs_under_the_lock():
    seen = []

    def cb(*msgs):
        seen.append((msgs, s.lock.acquire(blocking=False)))

    s = ApproximateTimeSynchronizer(2, 10, 0.1, callback=cb)
    s.add(0, "a", 0)
    s.add(1, "b", 10)
    assert seen == [(("a", "b"), False)]


def test_parallel_feeding_keeps_invariants():
    s = ApproximateTimeSynchronizer(2, 5, 0.02)
    out: list = []
    s.register_callback(lambda a, b: out.append((a, b)))

    def feed(i):
        for k in range(300):
            s.add(i, (i, k), k * 10_000_000)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(out) == s.counters.emitted
    assert all(abs(a[1] - b[1]) <= 1 for a, b in out)
    c = s.counters
    # every message is accounted for: in a set, evicted, overwritten or still queued
    assert sum(c.received) == 600 == 2 * c.emitted + sum(c.evicted) + sum(c.overwritten) + sum(s.pending())


def test_slop_conversion_matches_rclpy_duration():
    assert slop_to_ns(0.08) == 80_000_000 and slop_to_ns(0.1) == 100_000_000 and slop_to_ns(1e-9) == 1


def test_single_input_emits_each_message_unless_slop_is_zero():
    s = ApproximateTimeSynchronizer(1, 3, 0.01)
    assert s.add(0, "x", 7) == ("x",)
    assert ApproximateTimeSynchronizer(1, 3, 0.0).add(0, "x", 7) is None


@pytest.mark.skipif(importlib.util.find_spec("message_filters") is None, reason="message_filters is not installed")
@settings(max_examples=100, deadline=None)
@given(streams)
def test_differential_against_real_message_filters(spec):  # pragma: no cover - needs ROS message_filters
    import message_filters
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    n, queue_size, slop_ms, events = spec

    class Msg:
        def __init__(self, k, ns):
            self.k = k
            self.header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9))

    inputs = [message_filters.SimpleFilter() for _ in range(n)]
    real = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop_ms / 1000)
    got_real: list = []
    real.registerCallback(lambda *m: got_real.append(tuple(x.k for x in m)))
    sut = ApproximateTimeSynchronizer(n, queue_size, slop_ms / 1000)
    got: list = []
    sut.register_callback(lambda *m: got.append(tuple(x.k for x in m)))
    for k, (i, stamp_ms) in enumerate(events):
        m = Msg(k, stamp_ms * 1_000_000)
        inputs[i].signalMessage(m)
        sut.add(i, m, stamp_ms * 1_000_000)
    assert got == got_real
