"""Forming the first voter set from gossip views."""

from __future__ import annotations

from types import MappingProxyType

from node.gossip.members import Member, MembershipView, MemberState
from node.raft.bootstrap import Bootstrap, Bootstrapper, Join, Wait


def member(node_id: str, raft: str = "new", expect: int = 3, boot: str = "",
           state: MemberState = MemberState.ALIVE) -> Member:
    tags = {"raft": raft, "expect": str(expect), "boot": boot}
    return Member(node_id, f"{node_id}:80", f"{node_id}:7946", state=state,
                  tags=MappingProxyType(tags))


def view(*members: Member) -> MembershipView:
    return MembershipView(members)


def test_waits_until_expect_nodes_are_seen() -> None:
    b = Bootstrapper("n1", 3, settle_s=2.0)
    decision = b.decide(0.0, view(member("n1"), member("n2", boot="n1")))
    assert isinstance(decision, Wait) and decision.boot == "n1"


def test_only_the_lowest_bootstraps_after_agreement_and_settling() -> None:
    everyone = [member("n1"), member("n2", boot="n1"), member("n3", boot="n1"),
                member("n4", boot="n1")]
    lowest = Bootstrapper("n1", 3, settle_s=2.0)
    other = Bootstrapper("n2", 3, settle_s=2.0)
    assert isinstance(lowest.decide(0.0, view(*everyone)), Wait)  # settling
    assert lowest.decide(2.5, view(*everyone)) == Bootstrap(frozenset({"n1", "n2", "n3"}))
    assert other.decide(2.5, view(*everyone)) == Wait("n1 bootstraps", "n1")


def test_no_bootstrap_until_every_chosen_voter_names_the_bootstrapper() -> None:
    b = Bootstrapper("n1", 3, settle_s=0.0)
    disagreeing = view(member("n1"), member("n2", boot="n1"), member("n3", boot="n0"))
    assert isinstance(b.decide(5.0, disagreeing), Wait)
    agreeing = view(member("n1"), member("n2", boot="n1"), member("n3", boot="n1"))
    assert b.decide(6.0, agreeing) == Bootstrap(frozenset({"n1", "n2", "n3"}))


def test_a_change_in_the_set_restarts_the_settle_period() -> None:
    b = Bootstrapper("n2", 2, settle_s=2.0)
    first = view(member("n2", expect=2), member("n3", expect=2, boot="n2"))
    assert isinstance(b.decide(0.0, first), Wait)
    lower = view(member("n1", expect=2), member("n2", expect=2), member("n3", expect=2))
    assert b.decide(3.0, lower) == Wait("n1 bootstraps", "n1")


def test_an_existing_cluster_is_joined_never_bootstrapped_again() -> None:
    b = Bootstrapper("n9", 3, settle_s=0.0)
    decision = b.decide(10.0, view(member("n9"), member("n1", raft="member"),
                                   member("n2", raft="member"), member("n3", boot="n3")))
    assert decision == Join(("n1", "n2"))


def test_dead_members_and_other_expectations_do_not_count() -> None:
    b = Bootstrapper("n1", 3, settle_s=0.0)
    decision = b.decide(1.0, view(member("n1"), member("n2", boot="n1"),
                                  member("n3", boot="n1", state=MemberState.DEAD),
                                  member("n4", expect=5, boot="n1")))
    assert isinstance(decision, Wait)


def test_a_first_voter_joins_its_bootstrapper_unfenced_anyone_else_fenced() -> None:
    forming = view(member("n1"), member("n2", boot="n1"), member("n3", boot="n1"))
    formed = view(member("n1", raft="member"), member("n2", boot="n1"),
                  member("n3", boot="n1"))
    chosen = Bootstrapper("n2", 3, settle_s=2.0)
    assert chosen.decide(0.0, forming) == Wait("n1 bootstraps", "n1")
    assert chosen.decide(3.0, formed) == Join(("n1",), founding=True)
    # Back with an empty disk once the group has formed: it may have voted, so fenced.
    replaced = Bootstrapper("n2", 3, settle_s=2.0)
    assert replaced.decide(0.0, view(member("n2"), member("n1", raft="member"),
                                     member("n3", raft="member"))) == Join(("n1", "n3"))
    # Seen forming, but not among the first voters: it never voted either; still, joining
    # as a learner fenced costs nothing.
    late = Bootstrapper("n4", 3, settle_s=2.0)
    assert late.decide(0.0, view(*forming.members, member("n4", boot="n1"))) == \
        Wait("n1 bootstraps", "n1")
    assert late.decide(3.0, formed) == Join(("n1",))


def test_with_expect_one_no_node_counts_as_a_first_voter() -> None:
    # Alone in its first view, every node is "the set of one": that says nothing.
    b = Bootstrapper("n3", 1, settle_s=0.0)
    assert b.decide(0.0, view(member("n3", expect=1))) == Bootstrap(frozenset({"n3"}))
    assert b.decide(1.0, view(member("n3", expect=1), member("n1", raft="member"))) == \
        Join(("n1",))
