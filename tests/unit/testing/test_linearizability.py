"""The linearizability checker: classic anomalies per model, unknown outcomes, budgets,
and seeded property tests against sequential executions and a brute-force oracle."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from node.testing.linearizability import (EXISTS, FAIL, NO_CONTAINER, NOT_EMPTY, NOT_FOUND, OK,
                                          PRECONDITION_FAILED, BlobMeta, HistoryRecorder,
                                          KeyValue, Model, Op, Register, SetModel, Verdict,
                                          check)


def op(client: Any, kind: str, *args: Any, at: tuple[float, float | None],
       result: Any = None) -> Op:
    return Op(client, kind, args, at[0], at[1], result)


def verdict(model: Model[Any], history: list[Op], **kw: Any) -> Verdict:
    return check(model, history, **kw).verdict


LIN, BAD = Verdict.OK, Verdict.NOT_LINEARIZABLE


# -- register: the classic anomalies --------------------------------------------------


def test_empty_history_and_sequential_history_are_linearizable() -> None:
    assert check(Register(), []).ok
    h = [op(1, "write", 1, at=(0, 1), result=OK), op(2, "read", at=(2, 3), result=1),
         op(1, "cas", 1, 2, at=(4, 5), result=OK), op(2, "read", at=(6, 7), result=2)]
    assert check(Register(), h).ok


def test_stale_read_after_completed_write() -> None:
    h = [op(1, "write", 1, at=(0, 1), result=OK), op(2, "read", at=(2, 3), result=0)]
    result = check(Register(), h)
    assert result.verdict is BAD
    assert result.failure is not None
    assert result.failure.blocked == h[1]
    assert [o.kind for o in result.failure.prefix] == ["write"]
    assert "cannot be placed" in result.explain() and "model state after the prefix: 1" in \
        result.explain()


def test_read_from_the_future_is_rejected() -> None:
    h = [op(2, "read", at=(0, 1), result=1), op(1, "write", 1, at=(2, 3), result=OK)]
    assert verdict(Register(), h) is BAD


def test_overlapping_ops_may_reorder_but_not_disjoint_ones() -> None:
    # The read returns before the write does, but they overlap: fine.
    h = [op(1, "write", 1, at=(0, 5), result=OK), op(2, "read", at=(1, 2), result=1),
         op(3, "read", at=(3, 4), result=0)]
    assert verdict(Register(), h) is BAD  # read 1 then read 0, strictly after: not fine
    assert verdict(Register(), h[:2]) is LIN
    assert verdict(Register(), [h[0], h[2]]) is LIN


def test_equal_timestamps_count_as_overlapping() -> None:
    h = [op(1, "write", 1, at=(0, 2), result=OK), op(2, "read", at=(2, 3), result=0)]
    assert verdict(Register(), h) is LIN
    h[1] = op(2, "read", at=(2.001, 3), result=0)
    assert verdict(Register(), h) is BAD


def test_two_readers_see_concurrent_writes_in_opposite_orders() -> None:
    h = [op("w1", "write", 1, at=(0, 10), result=OK), op("w2", "write", 2, at=(0, 10), result=OK),
         op("a", "read", at=(1, 2), result=1), op("a", "read", at=(3, 4), result=2),
         op("b", "read", at=(1, 2), result=2), op("b", "read", at=(3, 4), result=1)]
    assert verdict(Register(), h) is BAD
    assert verdict(Register(), h[:4]) is LIN
    assert verdict(Register(), h[:2] + h[4:]) is LIN


def test_lost_update_with_cas() -> None:
    h = [op(1, "read", at=(0, 1), result=0), op(2, "read", at=(0, 1), result=0),
         op(1, "cas", 0, 1, at=(2, 4), result=OK), op(2, "cas", 0, 2, at=(2, 4), result=OK)]
    assert verdict(Register(), h) is BAD
    h[3] = op(2, "cas", 0, 2, at=(2, 4), result=FAIL)
    assert verdict(Register(), h) is LIN


def test_read_of_a_value_never_written() -> None:
    h = [op(1, "write", 1, at=(0, 5), result=OK), op(2, "read", at=(1, 2), result=7)]
    assert verdict(Register(), h) is BAD


def test_unknown_write_seen_then_unseen_is_rejected() -> None:
    w = op(1, "write", 1, at=(0, None))
    assert verdict(Register(), [w, op(2, "read", at=(1, 2), result=1),
                                op(2, "read", at=(3, 4), result=0)]) is BAD
    assert verdict(Register(), [w, op(2, "read", at=(1, 2), result=0),
                                op(2, "read", at=(3, 4), result=1)]) is LIN


def test_unknown_outcomes_are_fine_either_way() -> None:
    w = op(1, "write", 1, at=(0, math.inf))
    never = [w, op(2, "read", at=(5, 6), result=0), op(2, "read", at=(7, 8), result=0)]
    late = [w, op(2, "read", at=(5, 6), result=0), op(2, "read", at=(70, 80), result=1)]
    assert verdict(Register(), never) is LIN
    assert verdict(Register(), late) is LIN
    # But not before it was invoked.
    early = [op(2, "read", at=(0, 1), result=1), op(1, "write", 1, at=(2, None))]
    assert verdict(Register(), early) is BAD


def test_unknown_cas_takes_effect_only_if_its_comparison_holds() -> None:
    cas = op(1, "cas", 5, 1, at=(0, None))
    assert verdict(Register(), [cas, op(2, "read", at=(1, 2), result=1)]) is BAD
    cas = op(1, "cas", 0, 1, at=(0, None))
    assert verdict(Register(), [cas, op(2, "read", at=(1, 2), result=1)]) is LIN


def test_unobserved_results_are_not_checked_but_effects_are() -> None:
    h = [op(1, "write", 3, at=(0, 1)), op(2, "read", at=(2, 3)),
         op(2, "read", at=(4, 5), result=3)]
    assert verdict(Register(), h) is LIN
    assert verdict(Register(), h[:1] + [op(2, "read", at=(4, 5), result=0)]) is BAD


def test_op_records_are_validated() -> None:
    with pytest.raises(ValueError, match="returns before"):
        op(1, "read", at=(2, 1), result=0)
    with pytest.raises(ValueError, match="unknown outcome"):
        op(1, "read", at=(2, None), result=0)
    with pytest.raises(ValueError, match="no operation 'inc'"):
        check(Register(), [op(1, "inc", at=(0, 1), result=OK)])


# -- key-value map: P-compositionality --------------------------------------------------


def test_key_value_checks_each_key_on_its_own() -> None:
    h = [op(1, "put", "a", 1, at=(0, 1), result=OK), op(2, "put", "b", 2, at=(0, 1), result=OK),
         op(1, "get", "a", at=(2, 3), result=1), op(2, "get", "b", at=(2, 3), result=2),
         op(3, "get", "c", at=(2, 3), result=NOT_FOUND)]
    result = check(KeyValue(), h)
    assert result.ok and result.parts == 3
    h.append(op(3, "get", "b", at=(4, 5), result=NOT_FOUND))
    result = check(KeyValue(), h)
    assert result.verdict is BAD
    assert result.failure is not None and result.failure.part == "b"
    assert "in part 'b'" in result.explain()


def test_key_value_cas_and_initial_state() -> None:
    model = KeyValue(frozenset({("a", 1)}))
    h = [op(1, "cas", "a", 1, 2, at=(0, 1), result=OK),
         op(2, "cas", "b", NOT_FOUND, 9, at=(0, 1), result=OK),
         op(1, "get", "a", at=(2, 3), result=2), op(2, "get", "b", at=(2, 3), result=9)]
    assert check(model, h).ok
    assert verdict(KeyValue(), h) is BAD


# -- set ----------------------------------------------------------------------------------


def test_set_add_remove_contains() -> None:
    h = [op(1, "add", "x", at=(0, 1), result=OK), op(2, "contains", "x", at=(2, 3), result=True),
         op(1, "remove", "x", at=(4, 5), result=OK),
         op(2, "contains", "x", at=(6, 7), result=False)]
    result = check(SetModel(), h)
    assert result.ok and result.parts == 1
    h[3] = op(2, "contains", "x", at=(6, 7), result=True)
    assert verdict(SetModel(), h) is BAD


def test_set_list_must_show_a_consistent_snapshot() -> None:
    h = [op(1, "add", "x", at=(0, 10), result=OK), op(2, "add", "y", at=(0, 10), result=OK),
         op(3, "list", at=(1, 2), result=("x",)), op(4, "list", at=(1, 2), result=("y",))]
    result = check(SetModel(), h)
    assert result.verdict is BAD and result.parts == 1  # list ops: the set is checked whole
    assert verdict(SetModel(), h[:3]) is LIN
    late = op(3, "list", at=(11, 12), result=("x",))
    assert verdict(SetModel(), h[:2] + [late]) is BAD


# -- blob store metadata ---------------------------------------------------------------


def test_blob_put_get_delete() -> None:
    h = [op(1, "create_container", "c", at=(0, 1), result=OK),
         op(1, "put", "c", "b", "e1", at=(2, 3), result="e1"),
         op(2, "get", "c", "b", at=(4, 5), result="e1"),
         op(1, "delete", "c", "b", at=(6, 7), result=OK),
         op(2, "get", "c", "b", at=(8, 9), result=NOT_FOUND),
         op(2, "delete", "c", "b", at=(10, 11), result=NOT_FOUND),
         op(2, "delete_container", "c", at=(12, 13), result=OK),
         op(2, "get", "c", "b", at=(14, 15), result=NO_CONTAINER),
         op(2, "delete_container", "c", at=(16, 17), result=NOT_FOUND)]
    assert check(BlobMeta(), h).ok
    stale = h[:3] + [op(3, "get", "c", "b", at=(4, 5), result=NOT_FOUND)]
    assert verdict(BlobMeta(), stale) is BAD


def test_container_create_conflicts() -> None:
    both_ok = [op(1, "create_container", "c", at=(0, 2), result=OK),
               op(2, "create_container", "c", at=(1, 3), result=OK)]
    assert verdict(BlobMeta(), both_ok) is BAD
    both_ok[1] = op(2, "create_container", "c", at=(1, 3), result=EXISTS)
    assert verdict(BlobMeta(), both_ok) is LIN


def test_container_delete_races_blob_put_so_they_are_checked_together() -> None:
    model = BlobMeta.of({"c": {}})
    put = op(1, "put", "c", "b", "e1", at=(0, 5), result="e1")
    h = [put, op(2, "delete_container", "c", at=(1, 4), result=OK)]
    result = check(model, h)
    assert result.verdict is BAD and result.parts == 1
    assert verdict(model, [put, op(2, "delete_container", "c", at=(1, 4),
                                   result=NOT_EMPTY)]) is LIN
    late_put = op(1, "put", "c", "b", "e1", at=(0, 5), result=NO_CONTAINER)
    assert verdict(model, [late_put, h[1]]) is LIN
    assert verdict(model, [late_put, op(2, "delete_container", "c", at=(6, 7),
                                        result=OK)]) is BAD


def test_blobs_split_per_blob_when_a_container_has_no_container_ops() -> None:
    model = BlobMeta.of({"c": {"x": "e0"}, "d": {}})
    h = [op(1, "get", "c", "x", at=(0, 1), result="e0"),
         op(2, "put", "c", "y", "e1", at=(0, 1), result="e1"),
         op(3, "get", "d", "x", at=(0, 1), result=NOT_FOUND),
         op(4, "get", "e", "x", at=(0, 1), result=NO_CONTAINER)]
    result = check(model, h)
    assert result.ok and result.parts == 4


def test_conditional_put_lost_update() -> None:
    model = BlobMeta.of({"c": {"b": "e0"}})
    h = [op(1, "put", "c", "b", "e1", "e0", at=(0, 2), result="e1"),
         op(2, "put", "c", "b", "e2", "e0", at=(1, 3), result="e2")]
    assert verdict(model, h) is BAD
    h[1] = op(2, "put", "c", "b", "e2", "e0", at=(1, 3), result=PRECONDITION_FAILED)
    assert verdict(model, h) is LIN
    create = [op(1, "put", "c", "n", "e1", None, True, at=(0, 2), result="e1"),
              op(2, "put", "c", "n", "e2", None, True, at=(1, 3), result="e2")]
    assert verdict(model, create) is BAD


# -- budgets ---------------------------------------------------------------------------


def hard_history(n: int) -> list[Op]:
    """n fully concurrent writes and a read of a value never written: all orders fail."""
    writes = [op(i, "write", i, at=(0, 100)) for i in range(n)]
    return writes + [op("r", "read", at=(50, 60), result=-1)]


def test_step_budget_returns_unknown() -> None:
    result = check(Register(), hard_history(12), max_steps=500)
    assert result.verdict is Verdict.UNKNOWN
    assert "step budget of 500" in result.explain()
    assert result.unknown_parts == (None,)
    assert check(Register(), hard_history(4)).verdict is BAD


def test_timeout_returns_unknown_with_an_injected_clock() -> None:
    ticks = itertools.count()
    result = check(Register(), hard_history(12), timeout_s=3, clock=lambda: next(ticks))
    assert result.verdict is Verdict.UNKNOWN and result.reason == "timeout"


def test_a_violation_in_one_part_is_found_even_if_another_exhausts_the_budget() -> None:
    hard = [Op(o.client, "put", ("a", *o.args), o.invoked, o.returned, o.result)
            for o in hard_history(12)[:-1]]
    hard.append(op("r", "get", "a", at=(50, 60), result=-1))
    bad = [op(1, "put", "b", 1, at=(0, 1), result=OK), op(1, "get", "b", at=(2, 3), result=0)]
    assert verdict(KeyValue(), hard + bad, max_steps=500) is BAD


def test_recorder_marks_unfinished_ops_unknown() -> None:
    now = iter(range(100))
    rec = HistoryRecorder(lambda: next(now))
    w = rec.invoke(1, "write", 1)
    r = rec.invoke(2, "read")
    rec.complete(r, 1)
    rec.timeout(w)
    h = rec.history()
    assert h[0].unknown and not h[1].unknown and h[1].result == 1
    assert check(Register(), h).ok
    with pytest.raises(ValueError, match="already completed"):
        rec.complete(r, 2)


def test_recorder_logical_time_orders_back_to_back_ops() -> None:
    rec = HistoryRecorder()  # no clock: every event gets the next stamp, no ties
    rec.complete(rec.invoke(1, "write", 1), OK)
    rec.complete(rec.invoke(1, "read"), 0)
    h = rec.history()
    assert [(o.invoked, o.returned) for o in h] == [(1, 2), (3, 4)]
    assert verdict(Register(), h) is BAD


def test_explanations_show_sets_sorted() -> None:
    model = BlobMeta.of({"c": {"b": "e0", "a": "e1"}})
    h = [op(1, "delete_container", "c", at=(0, 1), result=OK)]
    text = check(model, h).explain()
    assert "('c', {('a', 'e1'), ('b', 'e0')})" in text, text


# -- property tests: sequential executions, mutations, and a brute-force oracle ---------


class RegisterRef:
    """Plain mutable reference implementations, independent of the models under test."""

    def __init__(self) -> None:
        self.value: Any = 0

    def apply(self, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "read":
            return self.value
        if kind == "write":
            self.value = args[0]
            return OK
        if self.value != args[0]:
            return FAIL
        self.value = args[1]
        return OK


class KeyValueRef:
    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}

    def apply(self, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "get":
            return self.d.get(args[0], NOT_FOUND)
        if kind == "put":
            self.d[args[0]] = args[1]
            return OK
        if self.d.get(args[0], NOT_FOUND) != args[1]:
            return FAIL
        self.d[args[0]] = args[2]
        return OK


class SetRef:
    def __init__(self) -> None:
        self.s: set[Any] = set()

    def apply(self, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "add":
            self.s.add(args[0])
        elif kind == "remove":
            self.s.discard(args[0])
        elif kind == "contains":
            return args[0] in self.s
        else:
            return tuple(sorted(self.s))
        return OK


class BlobRef:
    def __init__(self) -> None:
        self.c: dict[str, dict[str, str]] = {}

    def apply(self, kind: str, args: tuple[Any, ...]) -> Any:
        name = args[0]
        if kind == "create_container":
            if name in self.c:
                return EXISTS
            self.c[name] = {}
            return OK
        if kind == "delete_container":
            if name not in self.c:
                return NOT_FOUND
            if self.c[name]:
                return NOT_EMPTY
            del self.c[name]
            return OK
        if name not in self.c:
            return NO_CONTAINER
        blobs = self.c[name]
        if kind == "get":
            return blobs.get(args[1], NOT_FOUND)
        if kind == "delete":
            return OK if blobs.pop(args[1], None) is not None else NOT_FOUND
        if len(args) > 3 and args[3] is not None and blobs.get(args[1]) != args[3]:
            return PRECONDITION_FAILED
        blobs[args[1]] = args[2]
        return args[2]


Call = tuple[str, tuple[Any, ...]]


def register_call(rng: random.Random) -> Call:
    kind = rng.choice(["read", "read", "write", "cas"])
    if kind == "read":
        return kind, ()
    if kind == "write":
        return kind, (rng.randrange(4),)
    return kind, (rng.randrange(4), rng.randrange(4))


def kv_call(rng: random.Random) -> Call:
    key = rng.choice("abc")
    kind = rng.choice(["get", "get", "put", "cas"])
    if kind == "get":
        return kind, (key,)
    if kind == "put":
        return kind, (key, rng.randrange(4))
    return kind, (key, rng.choice([NOT_FOUND, 0, 1, 2, 3]), rng.randrange(4))


def set_call(rng: random.Random) -> Call:
    kind = rng.choice(["add", "add", "remove", "contains", "list"])
    return (kind, ()) if kind == "list" else (kind, (rng.choice("xyz"),))


def blob_call(rng: random.Random) -> Call:
    c = rng.choice(["c1", "c2"])
    kind = rng.choice(["create_container", "delete_container", "put", "put", "get", "get",
                       "delete"])
    if kind in ("create_container", "delete_container"):
        return kind, (c,)
    b = rng.choice("xy")
    if kind != "put":
        return kind, (c, b)
    if rng.random() < 0.3:
        return kind, (c, b, f"e{rng.randrange(4)}", f"e{rng.randrange(4)}")
    return kind, (c, b, f"e{rng.randrange(4)}")


# model, reference factory, call generator, a read kind, a result no execution can produce
SPECS: dict[str, tuple[Model[Any], Callable[[], Any], Callable[[random.Random], Call],
                       str, Any]] = {
    "register": (Register(), RegisterRef, register_call, "read", 99),
    "kv": (KeyValue(), KeyValueRef, kv_call, "get", 99),
    "set": (SetModel(), SetRef, set_call, "list", ("w",)),
    "blob": (BlobMeta(), BlobRef, blob_call, "get", "e99"),
}

RESULTS: dict[str, list[Any]] = {
    "register": [0, 1, 2, 3, OK, FAIL],
    "kv": [NOT_FOUND, 0, 1, 2, OK, FAIL],
    "set": [True, False, OK, (), ("x",), ("x", "y")],
    "blob": [OK, NOT_FOUND, EXISTS, NOT_EMPTY, NO_CONTAINER, PRECONDITION_FAILED, "e0", "e1"],
}


def sequential_history(rng: random.Random, ref: Any, gen: Callable[[random.Random], Call],
                       n: int, clients: int = 8, spread: float = 4.0,
                       p_unknown: float = 0.05) -> list[Op]:
    """Run n calls one at a time at times 1, 2, ...; each gets a random interval around
    its time, with clients busy one op at a time. Linearizable by construction."""
    free_at = {c: -math.inf for c in range(clients)}
    ops, t = [], 0.0
    for _ in range(n):
        t += 1.0
        while not (idle := sorted(c for c, free in free_at.items() if free < t)):
            t += 1.0
        client = rng.choice(idle)
        kind, args = gen(rng)
        invoked = rng.uniform(max(free_at[client], t - spread), t)
        if rng.random() < p_unknown:  # outcome unknown: applied or lost; client retires
            if rng.random() < 0.5:
                ref.apply(kind, args)
            ops.append(Op(client, kind, args, invoked, None))
            del free_at[client]
            free_at[len(ops) + clients] = t
            continue
        result = ref.apply(kind, args)
        returned = rng.uniform(t, t + spread)
        free_at[client] = returned
        ops.append(Op(client, kind, args, invoked, returned, result))
    return ops


def oracle(make_ref: Callable[[], Any], history: list[Op]) -> bool:
    """Brute force: try every order that respects real time (dropping unknown ops)."""
    def dfs(done: frozenset[int], ref: Any) -> bool:
        if all(i in done for i, o in enumerate(history) if not o.unknown):
            return True
        for i, x in enumerate(history):
            if i in done or any(j not in done and not y.unknown and y.returned is not None
                                and y.returned < x.invoked for j, y in enumerate(history)):
                continue
            after = copy.deepcopy(ref)
            got = after.apply(x.kind, x.args)
            if x.result is not None and got != x.result and not (
                    x.kind == "list" and isinstance(x.result, tuple) and set(got) == set(x.result)):
                continue
            if dfs(done | {i}, after):
                return True
        return False
    return dfs(frozenset(), make_ref())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_sequential_executions_are_linearizable_and_a_phantom_read_is_not(name: str) -> None:
    model, make_ref, gen, read_kind, phantom = SPECS[name]
    rng = random.Random(f"seq-{name}")
    for _ in range(25):
        history = sequential_history(rng, make_ref(), gen, rng.randrange(20, 60))
        result = check(model, history)
        assert result.ok, result.explain()
        reads = [i for i, o in enumerate(history) if o.kind == read_kind and not o.unknown]
        if not reads:
            continue
        i = rng.choice(reads)
        o = history[i]
        history[i] = Op(o.client, o.kind, o.args, o.invoked, o.returned, phantom)
        result = check(model, history)
        assert result.verdict is BAD, f"phantom result at op {i} not detected"
        assert result.failure is not None and result.failure.blocked is not None


@pytest.mark.parametrize("name", sorted(SPECS))
def test_checker_agrees_with_brute_force_on_small_mutated_histories(name: str) -> None:
    model, make_ref, gen, _, _ = SPECS[name]
    rng = random.Random(f"oracle-{name}")
    seen = {LIN: 0, BAD: 0}
    for _ in range(150):
        history = sequential_history(rng, make_ref(), gen, rng.randrange(2, 7), clients=3,
                                     spread=2.5, p_unknown=0.15)
        for _ in range(rng.randrange(3)):
            i = rng.randrange(len(history))
            o = history[i]
            if not o.unknown:
                result = rng.choice(RESULTS[name] + [None])
                history[i] = Op(o.client, o.kind, o.args, o.invoked, o.returned, result)
        expected = LIN if oracle(make_ref, history) else BAD
        got = verdict(model, history)
        assert got is expected, "\n".join(o.describe() for o in history)
        assert verdict(model, history, split=False) is expected
        seen[expected] += 1
    assert min(seen.values()) > 20, seen  # both verdicts are exercised


def test_two_hundred_op_register_history_checks_quickly() -> None:
    rng = random.Random("perf")
    history = sequential_history(rng, RegisterRef(), register_call, 200, clients=8)
    result = check(Register(), history, max_steps=200_000)
    assert result.ok, result.explain()
