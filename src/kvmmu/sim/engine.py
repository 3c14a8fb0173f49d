"""A small discrete-event engine: integer-nanosecond time, generator processes, pluggable ties.

Design. The engine follows SimPy's core (``simpy/core.py``: an environment owning a clock and a
heap of ``(time, priority, eid, event)``; ``simpy/events.py``: events that processes wait for) but
keeps only what a simulation of KVM threads needs, so that it stays fast in pure Python:

* Time is an ``int`` of nanoseconds. Floats would make "simultaneous" depend on rounding; KVM's
  costs are quoted in ns and the sums stay exact.
* Under the default FIFO rule the queue is a heap of distinct *times* and, per time, a list of
  the entries due then in insertion order (a calendar of buckets, as in Brown's calendar queue,
  CACM 31(10), 1988, with one bucket per instant).  Simultaneous entries cost a list append and
  the loop sets the clock once per instant; integer-ns simulations have many ties (every vCPU
  thinking the same 2 µs), and this layout took the engine from ~1.9 to ~5 M events/s
  (``benchmarks/bench_engine.py``, CPU time).
* Under the other rules the heap holds ``(time, tiebreak, seq, target)`` tuples. ``seq`` is a
  counter, unique, so two entries never compare their targets. ``tiebreak`` comes from an
  :class:`OrderingRule`, which is what decides the order of *simultaneous* events: FIFO by
  insertion (the default, like SimPy), LIFO, or seeded-random (a cheap way to shake out order
  dependence; the interleaving explorer can plug in its own rule). A rule may instead *choose*
  among all entries due at the same instant (:class:`ChoosingRule`), the hook a systematic
  explorer needs.
* A process is a Python generator. It yields an ``int`` (sleep that many ns; ``0`` lets every
  other event due now run first), an :class:`Event` (wait until it is triggered and receive its
  value), or another :class:`Process` (join it). The common case, yielding an ``int``, is handled
  inline in :meth:`Engine.run`: no event object is allocated, which is how the loop reaches
  several million events per second on one core (``benchmarks/bench_engine.py``).
* Exceptions raised inside a process propagate out of :meth:`Engine.run`: a simulation bug must
  not be swallowed by the scheduler.

The engine holds no global state; two engines never interact. Given the same processes and the same
rule (with the same seed), a run is bit-for-bit repeatable.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any, Protocol, cast

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # installed without mypy: only mypyc reads the decorator

    def mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls

#: A process: yields an ``int`` delay (ns) or an :class:`Event`; returns its result.
ProcessGenerator = Generator[Any, Any, Any]


@mypyc_attr(native_class=False)  # mypyc compiles no subclass of a builtin exception natively
class SimulationError(RuntimeError):
    """A process misused the engine (yielded something it cannot wait for, negative delay...)."""


# --------------------------------------------------------------------------------------------
# Ordering rules for simultaneous events
# --------------------------------------------------------------------------------------------


class OrderingRule(Protocol):
    """Decides the order of events due at the same instant, by a key given when they are scheduled.

    Entries are ordered by ``(time, tiebreak(seq), seq)``; ``seq`` grows with every insertion.
    """

    def tiebreak(self, seq: int) -> int:
        """The tie-break key of the entry inserted with sequence number ``seq``."""
        ...


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry due now, as shown to a :class:`ChoosingRule`: its sequence number and label."""

    seq: int
    label: str


class ChoosingRule(Protocol):
    """Chooses, each time several entries are due at the same instant, which runs first.

    The engine gathers every entry due at the current time, asks :meth:`choose`, runs the chosen
    one and asks again for the rest (plus anything the chosen one scheduled for the same instant).
    """

    def choose(self, now: int, pending: Sequence[Pending]) -> int:
        """The index in ``pending`` (ordered by insertion) of the entry to run next."""
        ...


@dataclass(frozen=True, slots=True)
class Fifo:
    """Simultaneous events run in the order they were scheduled (SimPy's behaviour)."""

    def tiebreak(self, seq: int) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Lifo:
    """Simultaneous events run in reverse scheduling order (a cheap order-dependence probe)."""

    def tiebreak(self, seq: int) -> int:
        return -seq


@dataclass(slots=True)
class SeededRandom:
    """Simultaneous events run in an order drawn from a seeded generator: repeatable per seed."""

    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def tiebreak(self, seq: int) -> int:
        return self._rng.getrandbits(32)


@dataclass(slots=True)
class SeededChoice:
    """A :class:`ChoosingRule` picking uniformly among the due entries, seeded."""

    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def choose(self, now: int, pending: Sequence[Pending]) -> int:
        return self._rng.randrange(len(pending))


def ordering_rule(name: str, seed: int = 0) -> OrderingRule | ChoosingRule:
    """The rule called ``name``: ``fifo``, ``lifo``, ``random`` (seeded) or ``choice`` (seeded)."""
    rules: dict[str, Callable[[], OrderingRule | ChoosingRule]] = {
        "fifo": Fifo,
        "lifo": Lifo,
        "random": lambda: SeededRandom(seed),
        "choice": lambda: SeededChoice(seed),
    }
    try:
        return rules[name]()
    except KeyError:
        raise ValueError(f"unknown ordering rule {name!r}; choose one of {sorted(rules)}") from None


# --------------------------------------------------------------------------------------------
# Events and processes
# --------------------------------------------------------------------------------------------


class Event:
    """Something processes can wait for; triggered once with a value (or an exception)."""

    __slots__ = ("_engine", "_exc", "_value", "_waiters", "label", "triggered")

    def __init__(self, engine: Engine, label: str = "") -> None:
        self._engine = engine
        self._waiters: list[Process] = []
        self._value: Any = None
        self._exc: BaseException | None = None
        self.triggered = False
        self.label = label

    @property
    def value(self) -> Any:
        """The value the event was triggered with (``None`` before)."""
        return self._value

    def succeed(self, value: Any = None) -> None:
        """Trigger the event: every waiting process resumes now, receiving ``value``."""
        if self.triggered:
            raise SimulationError(f"event {self.label!r} triggered twice")
        self.triggered = True
        self._value = value
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """Trigger the event with an exception, thrown into every waiting process."""
        if self.triggered:
            raise SimulationError(f"event {self.label!r} triggered twice")
        self.triggered = True
        self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for proc in waiters:
            proc._send = self._value
            proc._throw = self._exc
            self._engine._push(self._engine.now, proc)

    def _add_waiter(self, proc: Process) -> None:
        if self.triggered:
            proc._send = self._value
            proc._throw = self._exc
            self._engine._push(self._engine.now, proc)
        else:
            self._waiters.append(proc)


class Process(Event):
    """A generator run by the engine; as an event, it triggers with the generator's return value."""

    __slots__ = ("_gen", "_resume", "_send", "_throw")

    def __init__(self, engine: Engine, gen: ProcessGenerator, label: str = "") -> None:
        super().__init__(engine, label)
        self._gen = gen
        self._resume = gen.send
        self._send: Any = None
        self._throw: BaseException | None = None

    @property
    def alive(self) -> bool:
        """Whether the generator has not finished yet."""
        return not self.triggered


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------

_Entry = tuple[int, int, int, "Process | Callable[[], None]"]


class Engine:
    """The clock and the heap. ``now`` is the current simulated time in ns."""

    __slots__ = ("_buckets", "_choose", "_fifo", "_heap", "_seq", "_tiebreak", "_times",
                 "events_processed", "now", "rule")

    def __init__(self, rule: OrderingRule | ChoosingRule | None = None) -> None:
        self.rule: OrderingRule | ChoosingRule = Fifo() if rule is None else rule
        self.now = 0
        self.events_processed = 0
        self._heap: list[_Entry] = []
        self._seq = 0
        # A constant tie-break (FIFO, or a choosing rule that orders at pop time) is not called.
        self._tiebreak: Callable[[int], int] | None
        self._choose: ChoosingRule | None
        # The rules are told apart by their methods, not by isinstance on the Protocols: mypyc
        # compiles no runtime_checkable Protocol.
        tiebreak = getattr(self.rule, "tiebreak", None)
        self._tiebreak = None if isinstance(self.rule, Fifo) or not callable(tiebreak) else tiebreak
        self._choose = cast(ChoosingRule, self.rule) if callable(
            getattr(self.rule, "choose", None)) else None
        #: FIFO: the calendar (distinct times in a heap, each time's entries in order).
        self._fifo = self._tiebreak is None and self._choose is None
        self._times: list[int] = []
        self._buckets: dict[int, list[Process | Callable[[], None]]] = {}

    # -- scheduling -----------------------------------------------------------------------------

    def _push(self, time: int, target: Process | Callable[[], None]) -> None:
        if self._fifo:
            bucket = self._buckets.get(time)
            if bucket is None:
                self._buckets[time] = [target]
                heappush(self._times, time)
            else:
                bucket.append(target)
            return
        seq = self._seq
        self._seq = seq + 1
        tb = 0 if self._tiebreak is None else self._tiebreak(seq)
        heappush(self._heap, (time, tb, seq, target))

    def call_at(self, time: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at absolute time ``time`` (not before now)."""
        if time < self.now:
            raise SimulationError(f"cannot schedule at {time} ns, before now ({self.now} ns)")
        self._push(time, fn)

    def call_later(self, delay: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` after ``delay`` ns."""
        self.call_at(self.now + delay, fn)

    def event(self, label: str = "") -> Event:
        """A new untriggered event."""
        return Event(self, label)

    def timeout(self, delay: int, value: Any = None, label: str = "") -> Event:
        """An event that triggers by itself after ``delay`` ns (for waiting on one of several)."""
        ev = Event(self, label)
        self.call_later(delay, lambda: ev.succeed(value))
        return ev

    def process(self, gen: ProcessGenerator, label: str = "") -> Process:
        """Start ``gen`` as a process; its first step runs at the current time."""
        proc = Process(self, gen, label)
        self._push(self.now, proc)
        return proc

    def peek(self) -> int | None:
        """The time of the next entry, or ``None`` when nothing is scheduled."""
        if self._fifo:
            return self._times[0] if self._times else None
        return self._heap[0][0] if self._heap else None

    # -- running --------------------------------------------------------------------------------

    def run(self, until: int | None = None) -> int:
        """Run until nothing is scheduled, or until the next entry is later than ``until``.

        Returns the number of entries processed by this call. With ``until``, the clock ends at
        ``until`` (like SimPy's ``run(until=...)``).
        """
        start = self.events_processed
        if self._fifo:
            self._run_calendar(until)
        elif self._choose is not None:
            self._run_choosing(until)
        else:
            self._run_heap(until)
        if until is not None and self.now < until:
            self.now = until
        return self.events_processed - start

    def _run_calendar(self, until: int | None) -> None:
        # The hot loop of FIFO runs: the clock is set once per instant, then the instant's bucket
        # runs in order; entries scheduled for the same instant meanwhile join its end.  Each
        # process caches its bound ``send``; the int-yield case is inlined.
        times = self._times
        buckets = self._buckets
        limit = until if until is not None else 1 << 62
        count = 0
        proc_type = Process
        bucket: list[Process | Callable[[], None]] = []
        i = 0
        try:
            while times:
                now = times[0]
                if now > limit:
                    break
                self.now = now
                bucket = buckets[now]
                i = 0
                while i < len(bucket):
                    target = bucket[i]
                    i += 1
                    if type(target) is not proc_type:
                        target()  # type: ignore[operator]
                        continue
                    proc: Process = target
                    try:
                        if proc._throw is None:
                            send = proc._send
                            if send is None:
                                yielded = proc._resume(None)
                            else:
                                proc._send = None
                                yielded = proc._resume(send)
                        else:
                            exc, proc._throw = proc._throw, None
                            yielded = proc._gen.throw(exc)
                    except StopIteration as stop:
                        proc.triggered = True
                        proc._value = stop.value
                        proc._wake()
                        continue
                    if type(yielded) is int:
                        if yielded > 0:
                            t = now + yielded
                            later = buckets.get(t)
                            if later is None:
                                buckets[t] = [proc]
                                heappush(times, t)
                            else:
                                later.append(proc)
                        elif yielded == 0:
                            bucket.append(proc)
                        else:
                            raise SimulationError(
                                f"process {proc.label!r} yielded a negative delay")
                    else:
                        self._wait(proc, yielded)
                count += i
                i = 0
                heappop(times)
                del buckets[now]
        finally:
            count += i
            if i:  # left by an exception: what ran is gone, the rest of the instant stays due
                del bucket[:i]
            self.events_processed += count

    def _run_heap(self, until: int | None) -> None:
        # The hot loop: locals for every attribute, the int-yield case inlined.
        heap = self._heap
        tiebreak = self._tiebreak
        limit = until if until is not None else 1 << 62
        count = 0
        try:
            while heap:
                if heap[0][0] > limit:
                    break
                now, _, _, target = heappop(heap)
                self.now = now
                count += 1
                if type(target) is not Process:
                    target()  # type: ignore[operator]
                    continue
                proc: Process = target
                try:
                    if proc._throw is not None:
                        exc, proc._throw = proc._throw, None
                        yielded = proc._gen.throw(exc)
                    else:
                        send, proc._send = proc._send, None
                        yielded = proc._gen.send(send)
                except StopIteration as stop:
                    proc.triggered = True
                    proc._value = stop.value
                    proc._wake()
                    continue
                if type(yielded) is int:
                    if yielded < 0:
                        raise SimulationError(f"process {proc.label!r} yielded a negative delay")
                    seq = self._seq
                    self._seq = seq + 1
                    heappush(
                        heap,
                        (now + yielded, 0 if tiebreak is None else tiebreak(seq), seq, proc),
                    )
                else:
                    self._wait(proc, yielded)
        finally:
            self.events_processed += count

    def _run_choosing(self, until: int | None) -> None:
        # The explorer's loop: gather every entry due now and let the rule pick one at a time.
        heap = self._heap
        choose = self._choose
        assert choose is not None
        while heap:
            now = heap[0][0]
            if until is not None and now > until:
                break
            due: list[_Entry] = []
            while heap and heap[0][0] == now:
                due.append(heappop(heap))
            due.sort(key=lambda e: e[2])
            index = 0
            if len(due) > 1:
                index = choose.choose(now, [Pending(e[2], _label(e[3])) for e in due])
                if not 0 <= index < len(due):
                    raise SimulationError(f"choosing rule returned {index} for {len(due)} entries")
            chosen = due.pop(index)
            for entry in due:
                heappush(heap, entry)
            self.now = now
            self._step(chosen[3])

    def _step(self, target: Process | Callable[[], None]) -> None:
        self.events_processed += 1
        if not isinstance(target, Process):
            target()
            return
        proc = target
        try:
            if proc._throw is not None:
                exc, proc._throw = proc._throw, None
                yielded = proc._gen.throw(exc)
            else:
                send, proc._send = proc._send, None
                yielded = proc._gen.send(send)
        except StopIteration as stop:
            proc.triggered = True
            proc._value = stop.value
            proc._wake()
            return
        if type(yielded) is int:
            if yielded < 0:
                raise SimulationError(f"process {proc.label!r} yielded a negative delay")
            self._push(self.now + yielded, proc)
        else:
            self._wait(proc, yielded)

    def _wait(self, proc: Process, yielded: object) -> None:
        if isinstance(yielded, Event):
            if yielded._engine is not self:
                raise SimulationError(f"process {proc.label!r} waits on another engine's event")
            yielded._add_waiter(proc)
        else:
            raise SimulationError(
                f"process {proc.label!r} yielded {yielded!r}; expected an int delay (ns) or an Event"
            )


def _label(target: Process | Callable[[], None]) -> str:
    if isinstance(target, Process):
        return target.label
    return getattr(target, "__qualname__", repr(target))
