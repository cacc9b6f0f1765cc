"""The composition root's pure parts: which metadata command format the cluster reads."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from node.gossip.members import Member, MembershipView, MemberState
from node.meta.commands import META_FORMAT
from node.node import TAG_META, readable_format


def member(node_id: str, state: MemberState = MemberState.ALIVE,
           meta: str | None = str(META_FORMAT)) -> Member:
    tags = {TAG_META: meta} if meta is not None else {}
    return Member(node_id, "h", "g", state, tags=MappingProxyType(tags))


@pytest.mark.parametrize(("members", "expected"), [
    ([member("a")], META_FORMAT),
    ([member("a"), member("b"), member("c")], META_FORMAT),
    ([member("a"), member("old", meta=None)], 1),  # a node from before the tag existed
    ([member("a"), member("old", MemberState.DEAD, meta="1")], 1),  # it may come back
    ([member("a"), member("old", MemberState.SUSPECT, meta="1")], 1),
    ([member("a"), member("gone", MemberState.LEFT, meta="1")], META_FORMAT),
    ([member("a"), member("odd", meta="x")], 1),
    ([], 1),
])
def test_a_newer_format_waits_for_every_member_that_may_read_the_log(
        members: list[Member], expected: int) -> None:
    assert readable_format(MembershipView(tuple(members))) == expected
