"""A linearizability checker for recorded client histories (Wing & Gong, with Lowe's cache).

Simulations and fault campaigns record what each client asked and saw: an ``Op``
per request, with its invocation and response times and its result. ``check``
asks whether some total order of the operations (a) respects real time: an op
that returned before another was invoked comes first, and (b) replays on a
sequential ``Model`` to the same results. If none exists the store broke its
contract, and the result names the longest order found and the op that could
not be placed after it.

Unknown outcomes: an op with ``returned=None`` (a timeout, a crash) may have
taken effect at any point after its invocation, or never; the search may place
it anywhere after its call or drop it. ``result=None`` on a completed op means
the result was not observed, so any result is accepted. Results therefore never
use ``None`` as a value: missing things are ``NOT_FOUND`` and friends.

The search (WGL): walk the time-ordered list of call and return events; at a
call, try to linearize that op now (apply it to the model, remove its events,
restart from the head); at a return of a pending op, nothing else can come
first, so backtrack. Lowe's improvement caches every (linearized set, model
state) reached: a second arrival has the same future, so it is pruned. Models
that split into independent parts (P-compositionality: a map by key) are
checked part by part, which turns one exponential search into many small ones.

Limits: ``max_steps`` model steps per part and an optional ``timeout_s`` for
the whole check; when either runs out the verdict is ``UNKNOWN``, never a hang.
Events at equal times count as overlapping (the lenient reading: no false
alarms), so recorders should use a clock that moves between a response and the
next invocation. The checker is deterministic: same history, same verdict,
same explanation.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=Hashable)

# Result values shared by the models (strings so explanations read well).
OK = "ok"
FAIL = "fail"  # a compare-and-set whose comparison failed
NOT_FOUND = "not_found"
EXISTS = "exists"
NOT_EMPTY = "not_empty"
NO_CONTAINER = "no_container"
PRECONDITION_FAILED = "precondition_failed"

DEFAULT_MAX_STEPS = 2_000_000


@dataclass(frozen=True, slots=True)
class Op:
    """One client request as recorded: what was asked, when, and what came back.

    ``returned`` is None (or ``math.inf``) when the outcome is unknown; then
    ``result`` must be None. ``client`` is only a label for explanations: the
    checker orders ops by their times alone.
    """

    client: Hashable
    kind: str
    args: tuple[Any, ...]
    invoked: float
    returned: float | None
    result: Any = None

    def __post_init__(self) -> None:
        if self.returned is not None and self.returned < self.invoked:
            raise ValueError(f"op returns before it is invoked: {self.describe()}")
        if self.unknown and self.result is not None:
            raise ValueError(f"an op with an unknown outcome has no result: {self.describe()}")

    @property
    def unknown(self) -> bool:
        """True when the op may have taken effect after its invocation, or never."""
        return self.returned is None or self.returned == math.inf

    def describe(self) -> str:
        args = ", ".join(repr(a) for a in self.args)
        end = "?" if self.unknown else f"{self.returned:g}"
        outcome = "unknown outcome" if self.unknown else repr(self.result)
        return f"client {self.client}: {self.kind}({args}) -> {outcome} [{self.invoked:g}, {end}]"


def seen(op: Op, expected: object) -> bool:
    """Whether ``op``'s observed result agrees with what the model says it should be."""
    return op.result is None or op.result == expected


# -- models -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part(Generic[S]):
    """One independent piece of a history: its key, the model for it, and its ops."""

    key: Hashable
    model: Model[S]
    ops: list[Op]


class Model(Generic[S]):
    """A sequential specification. Subclasses are small frozen dataclasses.

    ``step`` returns whether the op's observed result is possible in ``state``
    and the state after the op; it must be pure, and states must be hashable
    (they are cached). It raises ValueError for an op kind it does not know.
    """

    __slots__ = ()

    def init(self) -> S:
        raise NotImplementedError

    def step(self, state: S, op: Op) -> tuple[bool, S]:
        raise NotImplementedError

    def read_only(self, op: Op) -> bool:
        """True if ``op`` never changes the state: unobserved, it constrains nothing."""
        return False

    def split(self, ops: list[Op]) -> list[Part[S]]:
        """Independent parts; only override where each op touches exactly one part."""
        return [Part(None, self, ops)]


def unknown_kind(model: object, op: Op) -> ValueError:
    return ValueError(f"{type(model).__name__} has no operation {op.kind!r}")


def lookup(items: frozenset[tuple[Any, Any]], key: Any) -> Any:
    """The value for ``key`` in a frozenset of (key, value) pairs, or NOT_FOUND."""
    for k, v in items:
        if k == key:
            return v
    return NOT_FOUND


def assign(items: frozenset[tuple[Any, Any]], key: Any, value: Any) -> frozenset[tuple[Any, Any]]:
    """The pairs with ``key`` mapped to ``value`` (or removed when ``value`` is NOT_FOUND)."""
    kept = frozenset(pair for pair in items if pair[0] != key)
    return kept if value is NOT_FOUND else kept | {(key, value)}


def group_by(ops: Iterable[Op], key: Callable[[Op], Hashable]) -> dict[Hashable, list[Op]]:
    groups: dict[Hashable, list[Op]] = {}
    for op in ops:
        groups.setdefault(key(op), []).append(op)
    return groups


@dataclass(frozen=True, slots=True)
class Register(Model[Hashable]):
    """One value. ``read() -> value``, ``write(v) -> OK``, ``cas(old, new) -> OK | FAIL``."""

    initial: Hashable = 0

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        kind = op.kind
        if kind == "read":
            return seen(op, state), state
        if kind == "write":
            return seen(op, OK), op.args[0]
        if kind == "cas":
            old, new = op.args
            return (seen(op, OK), new) if state == old else (seen(op, FAIL), state)
        raise unknown_kind(self, op)

    def read_only(self, op: Op) -> bool:
        return op.kind == "read"


Pairs = frozenset[tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class KeyValue(Model[Pairs]):
    """A map of registers: ``get(k) -> value | NOT_FOUND``, ``put(k, v) -> OK``,
    ``cas(k, old, new) -> OK | FAIL`` (``old`` may be NOT_FOUND: create if absent).

    Every op touches one key, so each key is checked on its own.
    """

    initial: Pairs = frozenset()

    def init(self) -> Pairs:
        return self.initial

    def step(self, state: Pairs, op: Op) -> tuple[bool, Pairs]:
        key = op.args[0]
        current = lookup(state, key)
        if op.kind == "get":
            return seen(op, current), state
        if op.kind == "put":
            return seen(op, OK), assign(state, key, op.args[1])
        if op.kind == "cas":
            _, old, new = op.args
            if current == old:
                return seen(op, OK), assign(state, key, new)
            return seen(op, FAIL), state
        raise unknown_kind(self, op)

    def read_only(self, op: Op) -> bool:
        return op.kind == "get"

    def split(self, ops: list[Op]) -> list[Part[Pairs]]:
        return [Part(key, KeyValue(frozenset(p for p in self.initial if p[0] == key)), group)
                for key, group in group_by(ops, lambda op: op.args[0]).items()]


COLLECTIONS = (tuple, list, set, frozenset)


@dataclass(frozen=True, slots=True)
class SetModel(Model[frozenset[Any]]):
    """A set: ``add(x) -> OK``, ``remove(x) -> OK``, ``contains(x) -> bool``,
    ``list() -> collection`` (compared as a set).

    Split by element unless the history lists the whole set (``list`` reads
    every element at once, so then the set is checked whole).
    """

    initial: frozenset[Any] = frozenset()

    def init(self) -> frozenset[Any]:
        return self.initial

    def step(self, state: frozenset[Any], op: Op) -> tuple[bool, frozenset[Any]]:
        kind = op.kind
        if kind == "add":
            return seen(op, OK), state | {op.args[0]}
        if kind == "remove":
            return seen(op, OK), state - {op.args[0]}
        if kind == "contains":
            return seen(op, op.args[0] in state), state
        if kind == "list":
            listed = op.result
            return listed is None or (isinstance(listed, COLLECTIONS)
                                      and frozenset(listed) == state), state
        raise unknown_kind(self, op)

    def read_only(self, op: Op) -> bool:
        return op.kind in ("contains", "list")

    def split(self, ops: list[Op]) -> list[Part[frozenset[Any]]]:
        if any(op.kind == "list" for op in ops):
            return [Part(None, self, ops)]
        return [Part(x, SetModel(self.initial & {x}), group)
                for x, group in group_by(ops, lambda op: op.args[0]).items()]


# container name -> frozenset of (blob name, etag); absent containers do not exist.
BlobState = frozenset[tuple[str, frozenset[tuple[str, str]]]]
CONTAINER_KINDS = ("create_container", "delete_container")


@dataclass(frozen=True, slots=True)
class BlobMeta(Model[BlobState]):
    """The metadata store's view of containers and blobs (etag = content MD5).

    Container ops: ``create_container(c) -> OK | EXISTS``,
    ``delete_container(c) -> OK | NOT_FOUND | NOT_EMPTY``. Blob ops, each
    ``NO_CONTAINER`` when ``c`` does not exist:
    ``put(c, b, etag, if_match=None, if_none_match=False) -> etag | PRECONDITION_FAILED``
    (``if_match`` is an etag, a tuple of etags, or ``"*"``),
    ``get(c, b) -> etag | NOT_FOUND``, ``delete(c, b) -> OK | NOT_FOUND``.

    Splitting: every op names one container, so containers are independent.
    Within a container, ``delete_container`` reads every blob (NOT_EMPTY) and
    every blob op reads the container's existence, so a container whose
    history has container ops is checked whole. Without them its existence
    never changes, and each blob is checked on its own.
    """

    initial: BlobState = frozenset()

    @staticmethod
    def of(containers: dict[str, dict[str, str]]) -> BlobMeta:
        """A model starting from ``{container: {blob: etag}}``."""
        return BlobMeta(frozenset((c, frozenset(blobs.items()))
                                  for c, blobs in containers.items()))

    def init(self) -> BlobState:
        return self.initial

    def step(self, state: BlobState, op: Op) -> tuple[bool, BlobState]:
        kind, name = op.kind, op.args[0]
        blobs = lookup(state, name)
        if kind == "create_container":
            if blobs is not NOT_FOUND:
                return seen(op, EXISTS), state
            return seen(op, OK), assign(state, name, frozenset())
        if kind == "delete_container":
            if blobs is NOT_FOUND:
                return seen(op, NOT_FOUND), state
            if blobs:
                return seen(op, NOT_EMPTY), state
            return seen(op, OK), assign(state, name, NOT_FOUND)
        if kind not in ("put", "get", "delete"):
            raise unknown_kind(self, op)
        if blobs is NOT_FOUND:
            return seen(op, NO_CONTAINER), state
        blob = op.args[1]
        current = lookup(blobs, blob)
        if kind == "get":
            return seen(op, current), state
        if kind == "delete":
            if current is NOT_FOUND:
                return seen(op, NOT_FOUND), state
            return seen(op, OK), assign(state, name, assign(blobs, blob, NOT_FOUND))
        etag = op.args[2]
        if not put_allowed(current, *op.args[3:]):
            return seen(op, PRECONDITION_FAILED), state
        return seen(op, etag), assign(state, name, assign(blobs, blob, etag))

    def read_only(self, op: Op) -> bool:
        return op.kind == "get"

    def split(self, ops: list[Op]) -> list[Part[BlobState]]:
        parts: list[Part[BlobState]] = []
        for container, group in group_by(ops, lambda op: op.args[0]).items():
            own = frozenset(p for p in self.initial if p[0] == container)
            if any(op.kind in CONTAINER_KINDS for op in group):
                parts.append(Part(container, BlobMeta(own), group))
                continue
            for blob, blob_ops in group_by(group, lambda op: op.args[1]).items():
                only = frozenset((c, frozenset(b for b in blobs if b[0] == blob))
                                 for c, blobs in own)
                parts.append(Part((container, blob), BlobMeta(only), blob_ops))
        return parts


def put_allowed(current: str, if_match: str | tuple[str, ...] | None = None,
                if_none_match: bool = False) -> bool:
    """The PUT conditions of ``node.meta.state.check_put_conditions``, on an etag."""
    if if_none_match and current is not NOT_FOUND:
        return False
    if if_match is None:
        return True
    if current is NOT_FOUND:
        return False
    tags = (if_match,) if isinstance(if_match, str) else if_match
    return "*" in tags or current in tags


# -- verdicts ---------------------------------------------------------------------------


class Verdict(enum.Enum):
    OK = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a part is not linearizable: the deepest order the search reached.

    ``prefix`` linearizes (real time and model agree); ``blocked`` is the op
    that had to come next (its response was due) but fits after no extension
    of the prefix; ``state`` is the model state after ``prefix``.
    """

    part: Hashable
    prefix: tuple[Op, ...]
    blocked: Op | None
    state: object

    def explain(self) -> str:
        where = "" if self.part is None else f" in part {self.part!r}"
        lines = [f"not linearizable{where}: {len(self.prefix)} ops linearize, then"]
        lines.append(f"  {self.blocked.describe() if self.blocked else '?'}")
        lines.append(f"  cannot be placed (model state after the prefix: {show(self.state)})")
        lines.append("  linearized prefix:")
        lines += [f"    {i + 1}. {op.describe()}" for i, op in enumerate(self.prefix)]
        return "\n".join(lines)


def show(value: object) -> str:
    """``repr`` with set contents sorted, so explanations do not vary with hash seeds."""
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(show(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    steps: int
    parts: int
    failure: Failure | None = None
    unknown_parts: tuple[Hashable, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        if self.failure is not None:
            return self.failure.explain()
        head = f"{self.verdict.value} ({self.parts} parts, {self.steps} model steps)"
        if self.verdict is Verdict.UNKNOWN:
            return f"{head}: {self.reason}; undecided parts: {list(self.unknown_parts)!r}"
        return head


# -- the search -------------------------------------------------------------------------


class BudgetExhausted(Exception):
    def __init__(self, reason: str, steps: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.steps = steps


@dataclass
class Budget:
    """Steps left for one part and the deadline for the whole check."""

    max_steps: int
    deadline: float
    clock: Callable[[], float]

    def exhausted(self, steps: int) -> BudgetExhausted | None:
        if steps > self.max_steps:
            return BudgetExhausted(f"step budget of {self.max_steps} exhausted", steps)
        if steps & 0x3FF == 0 and self.clock() > self.deadline:
            return BudgetExhausted("timeout", steps)
        return None


def check(model: Model[Any], history: Sequence[Op], *, max_steps: int = DEFAULT_MAX_STEPS,
          timeout_s: float | None = None, split: bool = True,
          clock: Callable[[], float] = time.monotonic) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Args:
        max_steps: model steps allowed per part before that part is UNKNOWN.
        timeout_s: wall-clock limit for the whole check (off by default: the
            step budget alone keeps the verdict deterministic).
        split: check the model's independent parts separately (P-compositionality).
        clock: the time source for ``timeout_s``, injectable for tests.

    Returns NOT_LINEARIZABLE with the first failing part's explanation, else
    UNKNOWN if some part ran out of budget, else OK. Parts are checked in the
    order their first op appears in ``history``.
    """
    deadline = math.inf if timeout_s is None else clock() + timeout_s
    ops = [op for op in history if not (op.result is None and model.read_only(op))]
    parts = model.split(ops) if split else [Part(None, model, ops)]
    total, undecided, reason = 0, [], ""
    for part in parts:
        budget = Budget(max_steps, deadline, clock)
        try:
            steps, failure = search(part, budget)
        except BudgetExhausted as exc:
            total += exc.steps
            undecided.append(part.key)
            reason = exc.reason
            continue
        total += steps
        if failure is not None:
            return CheckResult(Verdict.NOT_LINEARIZABLE, total, len(parts), failure)
    if undecided:
        return CheckResult(Verdict.UNKNOWN, total, len(parts), None, tuple(undecided), reason)
    return CheckResult(Verdict.OK, total, len(parts))


class Events:
    """The time-ordered call and return events of a history as a doubly linked list.

    Entries 1..2n are events, 0 is the head and 2n+1 the tail. Lifting an op
    unlinks its two events; lifts are undone in reverse order (dancing links),
    so each is O(1).
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        stamps = [(op.invoked, 0, i) for i, op in enumerate(ops)]
        stamps += [(math.inf if op.unknown else float(op.returned or 0), 1, i)
                   for i, op in enumerate(ops)]
        stamps.sort()  # calls before returns at equal times: they overlap
        size = len(stamps) + 2
        self.tail = size - 1
        self.next = list(range(1, size + 1))
        self.prev = list(range(-1, size - 1))
        self.is_call = [False] * size
        self.op_of = [-1] * size
        self.match = [0] * size  # call entry -> its return entry
        call_entry: dict[int, int] = {}
        for entry, (_, is_return, i) in enumerate(stamps, start=1):
            self.op_of[entry] = i
            if is_return:
                self.match[call_entry[i]] = entry
            else:
                self.is_call[entry] = True
                call_entry[i] = entry

    def lift(self, call: int) -> None:
        nxt, prv = self.next, self.prev
        for entry in (call, self.match[call]):
            nxt[prv[entry]] = nxt[entry]
            prv[nxt[entry]] = prv[entry]

    def unlift(self, call: int) -> None:
        nxt, prv = self.next, self.prev
        for entry in (self.match[call], call):
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry


def search(part: Part[Any], budget: Budget) -> tuple[int, Failure | None]:
    """WGL over one part: (model steps taken, None if linearizable else the failure).

    Raises BudgetExhausted when the budget runs out.
    """
    ops, model = part.ops, part.model
    events = Events(ops)
    nxt, is_call, op_of = events.next, events.is_call, events.op_of
    step = model.step
    pending = sum(1 for op in ops if not op.unknown)  # completed ops not yet linearized
    state = model.init()
    linearized = 0
    stack: list[tuple[int, Any]] = []  # (call entry, state before it)
    cache: set[tuple[int, Any]] = set()
    steps, deepest = 0, -1
    failure: Failure | None = None
    entry = nxt[0]
    while pending:
        if not is_call[entry]:  # a due response (or the end): backtrack
            if len(stack) > deepest:
                deepest = len(stack)
                blocked = ops[op_of[entry]] if entry != events.tail else None
                prefix = tuple(ops[op_of[e]] for e, _ in stack)
                failure = Failure(part.key, prefix, blocked, state)
            if not stack:
                return steps, failure
            entry, state = stack.pop()
            i = op_of[entry]
            linearized &= ~(1 << i)
            events.unlift(entry)
            pending += not ops[i].unknown
            entry = nxt[entry]
            continue
        i = op_of[entry]
        steps += 1
        if (exhausted := budget.exhausted(steps)) is not None:
            raise exhausted
        fits, after = step(state, ops[i])
        if fits:
            key = (linearized | (1 << i), after)
            if key not in cache:
                cache.add(key)
                stack.append((entry, state))
                state, linearized = after, key[0]
                events.lift(entry)
                pending -= not ops[i].unknown
                entry = nxt[0]
                continue
        entry = nxt[entry]
    return steps, None


# -- recording --------------------------------------------------------------------------


class HistoryRecorder:
    """Builds a history while a simulation or campaign runs.

    ``invoke`` before sending a request, then ``complete`` with the result, or
    ``timeout`` (or nothing) when the outcome is unknown. Without a clock each
    event is stamped with its position in the recording (logical time: strict,
    no ties, sound whenever one process records every event in the order it
    happens). With a clock, events that share a stamp count as overlapping.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._events = 0
        self._clock = clock or self._next_event
        self._ops: list[Op] = []

    def _next_event(self) -> float:
        self._events += 1
        return float(self._events)

    def invoke(self, client: Hashable, kind: str, *args: Any) -> int:
        self._ops.append(Op(client, kind, tuple(args), self._clock(), None))
        return len(self._ops) - 1

    def complete(self, handle: int, result: Any) -> None:
        op = self._ops[handle]
        if not op.unknown:
            raise ValueError(f"op already completed: {op.describe()}")
        self._ops[handle] = Op(op.client, op.kind, op.args, op.invoked, self._clock(), result)

    def timeout(self, handle: int) -> None:
        """The outcome is unknown: the op may take effect later, or never (a no-op)."""

    def history(self) -> list[Op]:
        return list(self._ops)
