"""The steward's plan for the Raft membership: each rule, their order, and the invariants
(one voter at a time, never an empty or oversized voter set, never the leader itself)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import pytest

from node.coordinator.steward import MAX_VOTERS, Change, DownTimes, Policy, plan
from node.gossip.members import Member, MembershipView, MemberState
from node.raft.messages import Membership

ME = "n1"
POLICY = Policy(replace_after_s=30.0)
LONG = 60.0  # dead for longer than POLICY.replace_after_s
RAFT = MappingProxyType({"raft": "member"})
NO_TAGS: MappingProxyType[str, str] = MappingProxyType({})

ALIVE, SUSPECT, DEAD, LEFT = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD,
                              MemberState.LEFT)


def member(node_id: str, state: MemberState = ALIVE, *, raft: bool = True,
           tags: Mapping[str, str] | None = None) -> Member:
    if tags is None:
        tags = RAFT if raft else NO_TAGS
    return Member(node_id, f"{node_id}:8080", f"{node_id}:7946", state=state, tags=tags)


def view(*members: Member) -> MembershipView:
    return MembershipView(tuple(members), version=1)


def alive(*ids: str) -> list[Member]:
    return [member(n) for n in ids]


def ms(voters: Iterable[str], learners: Iterable[str] = ()) -> Membership:
    return Membership(frozenset(voters), frozenset(learners))


def step(membership: Membership, members: Iterable[Member], *,
         down_for: dict[str, float] | None = None, matches: dict[str, int] | None = None,
         commit: int = 100, policy: Policy = POLICY, me: str = ME) -> Change | None:
    if matches is None:  # everyone caught up
        matches = {n: commit for n in membership.members}
    return plan(me, membership, matches, commit, view(*members), down_for or {}, policy)


def dead(node_id: str, state: MemberState = DEAD) -> Member:
    return member(node_id, state)


# -- rule 1: joining as a learner -------------------------------------------------------------


def test_stable_membership_needs_no_change() -> None:
    assert step(ms({"n1", "n2", "n3"}), alive("n1", "n2", "n3")) is None


def test_lone_node_with_nobody_else_needs_no_change() -> None:
    assert step(ms({"n1"}), alive("n1")) is None
    assert step(ms({"n1"}), []) is None  # not even itself in the view


def test_alive_raft_member_outside_the_membership_joins_as_learner() -> None:
    change = step(ms({"n1"}), alive("n1", "n2"))
    assert change is not None
    assert change.membership == ms({"n1"}, {"n2"})
    assert "n2" in change.why and "learner" in change.why


def test_joining_keeps_existing_learners() -> None:
    change = step(ms({"n1"}, {"n2"}), alive("n1", "n2", "n3"), matches={"n2": 0})
    assert change is not None and change.membership == ms({"n1"}, {"n2", "n3"})


def test_lowest_id_joins_first_one_at_a_time() -> None:
    members = alive("n1", "n5", "n3", "n4")
    change = step(ms({"n1"}), members)
    assert change is not None and change.membership == ms({"n1"}, {"n3"})
    change = step(change.membership, members, matches={"n3": 0})
    assert change is not None and change.membership == ms({"n1"}, {"n3", "n4"})


@pytest.mark.parametrize("tags", [NO_TAGS, MappingProxyType({"raft": "new", "expect": "3"}),
                                  MappingProxyType({"zone": "member"}),
                                  MappingProxyType({"raft": "MEMBER"})])
def test_member_without_tag_raft_member_is_not_added(tags: MappingProxyType[str, str]
                                                      ) -> None:
    assert step(ms({"n1"}), [member("n1"), member("n2", tags=tags)]) is None


@pytest.mark.parametrize("state", [SUSPECT, DEAD, LEFT])
def test_member_not_alive_is_not_added(state: MemberState) -> None:
    assert step(ms({"n1"}), [member("n1"), member("n2", state)]) is None


def test_joining_comes_before_every_other_rule() -> None:
    # A full voter set with a long-dead voter, a healthy learner and a long-dead learner:
    # the newcomer still goes first.
    voters = {"n1", "n2", "n3", "n4", "n5"}
    members = [*alive("n1", "n2", "n3", "n4", "n6", "n9"), dead("n5"), dead("n7")]
    change = step(ms(voters, {"n6", "n7"}), members, down_for={"n5": LONG, "n7": LONG})
    assert change is not None and change.membership == ms(voters, {"n6", "n7", "n9"})


def test_a_removed_node_alive_again_rejoins_as_learner() -> None:
    # n3 was removed while down; once gossip sees it alive it comes back, as a learner.
    change = step(ms({"n1", "n2", "n4", "n5"}), alive("n1", "n2", "n3", "n4", "n5"))
    assert change is not None
    assert change.membership == ms({"n1", "n2", "n4", "n5"}, {"n3"})


# -- rule 3: promotion --------------------------------------------------------------------------


def test_caught_up_learner_is_promoted() -> None:
    change = step(ms({"n1"}, {"n2"}), alive("n1", "n2"))
    assert change is not None
    assert change.membership == ms({"n1", "n2"})
    assert "n2" in change.why and "promoted" in change.why


def test_promotion_up_to_max_voters_then_stays_learner() -> None:
    ids = [f"n{i}" for i in range(1, 8)]
    membership = ms({"n1"})
    seen: list[Membership] = []
    for _ in range(20):
        change = step(membership, alive(*ids))
        if change is None:
            break
        membership = change.membership
        seen.append(membership)
    assert membership == ms({"n1", "n2", "n3", "n4", "n5"}, {"n6", "n7"})
    assert len(membership.voters) == MAX_VOTERS == 5
    # Everyone joins first (lowest id first), then the lowest learners are promoted.
    assert seen[:6] == [ms({"n1"}, {f"n{i}" for i in range(2, k)}) for k in range(3, 9)]
    assert seen[6] == ms({"n1", "n2"}, {"n3", "n4", "n5", "n6", "n7"})


def test_promotion_respects_a_smaller_max_voters() -> None:
    policy = Policy(replace_after_s=30.0, max_voters=3)
    assert step(ms({"n1", "n2", "n3"}, {"n4"}), alive("n1", "n2", "n3", "n4"),
                policy=policy) is None
    change = step(ms({"n1", "n2"}, {"n4", "n3"}), alive("n1", "n2", "n3", "n4"),
                  policy=policy)
    assert change is not None and change.membership == ms({"n1", "n2", "n3"}, {"n4"})


def test_learner_lagging_more_than_catch_up_slack_is_not_promoted() -> None:
    slack = POLICY.catch_up_slack
    membership = ms({"n1"}, {"n2"})
    members = alive("n1", "n2")
    assert step(membership, members, commit=1000, matches={"n2": 1000 - slack - 1}) is None
    # Exactly at the slack is close enough.
    change = step(membership, members, commit=1000, matches={"n2": 1000 - slack})
    assert change is not None and change.membership == ms({"n1", "n2"})


def test_learner_with_no_known_progress_counts_as_match_zero() -> None:
    membership = ms({"n1"}, {"n2"})
    members = alive("n1", "n2")
    slack = POLICY.catch_up_slack
    assert step(membership, members, commit=slack + 1, matches={}) is None
    change = step(membership, members, commit=slack, matches={})
    assert change is not None and change.membership == ms({"n1", "n2"})


def test_zero_slack_requires_the_learner_to_have_the_commit_index() -> None:
    policy = Policy(replace_after_s=30.0, catch_up_slack=0)
    membership = ms({"n1"}, {"n2"})
    assert step(membership, alive("n1", "n2"), commit=50, matches={"n2": 49},
                policy=policy) is None
    assert step(membership, alive("n1", "n2"), commit=50, matches={"n2": 50},
                policy=policy) is not None


def test_lagging_learner_is_skipped_for_a_caught_up_one() -> None:
    change = step(ms({"n1"}, {"n2", "n3"}), alive("n1", "n2", "n3"), commit=1000,
                  matches={"n2": 10, "n3": 999})
    assert change is not None and change.membership == ms({"n1", "n3"}, {"n2"})


@pytest.mark.parametrize("state", [SUSPECT, DEAD, LEFT])
def test_learner_not_alive_is_not_promoted(state: MemberState) -> None:
    # Recently down (not long enough to be removed), or merely suspected.
    assert step(ms({"n1"}, {"n2"}), [member("n1"), member("n2", state)],
                down_for={"n2": 1.0} if state in (DEAD, LEFT) else {}) is None


def test_learner_missing_from_the_view_is_not_promoted() -> None:
    assert step(ms({"n1"}, {"n2"}), alive("n1")) is None


def test_learner_long_down_is_not_promoted_even_if_gossip_says_alive() -> None:
    # Inconsistent inputs (a stale down time): the down time wins, the learner is removed.
    change = step(ms({"n1"}, {"n2"}), alive("n1", "n2"), down_for={"n2": LONG})
    assert change is not None and change.membership == ms({"n1"})


def test_learner_needs_no_raft_tag_to_be_promoted() -> None:
    # The tag only decides who joins; a learner already in the membership is promoted
    # on liveness and progress.
    change = step(ms({"n1"}, {"n2"}), [member("n1"), member("n2", raft=False)])
    assert change is not None and change.membership == ms({"n1", "n2"})


def test_lowest_healthy_learner_is_promoted_first() -> None:
    change = step(ms({"n1"}, {"n4", "n2", "n3"}), alive("n1", "n2", "n3", "n4"))
    assert change is not None and change.membership == ms({"n1", "n2"}, {"n3", "n4"})


# -- rules 2 and 4: removal of long-dead voters -------------------------------------------------


FULL = frozenset({"n1", "n2", "n3", "n4", "n5"})


def test_full_voter_set_with_dead_voter_and_healthy_learner_removes_then_promotes() -> None:
    members = [*alive("n1", "n2", "n3", "n5", "n6"), dead("n4")]
    down = {"n4": LONG}
    change = step(ms(FULL, {"n6"}), members, down_for=down)
    assert change is not None
    assert change.membership == ms(FULL - {"n4"}, {"n6"})
    assert "n4" in change.why and "n6" in change.why
    change = step(change.membership, members, down_for=down)
    assert change is not None
    assert change.membership == ms({"n1", "n2", "n3", "n5", "n6"})
    assert step(change.membership, members, down_for=down) is None


def test_two_dead_voters_are_replaced_one_at_a_time_lowest_first() -> None:
    members = [*alive("n1", "n2", "n4", "n6", "n7"), dead("n3"), dead("n5", LEFT)]
    down = {"n3": LONG, "n5": LONG}
    membership = ms(FULL, {"n6", "n7"})
    history = []
    while (change := step(membership, members, down_for=down)) is not None:
        membership = change.membership
        history.append(membership)
        assert len(history) < 10
    assert history == [
        ms(FULL - {"n3"}, {"n6", "n7"}),
        ms({"n1", "n2", "n4", "n5", "n6"}, {"n7"}),
        ms({"n1", "n2", "n4", "n6"}, {"n7"}),
        ms({"n1", "n2", "n4", "n6", "n7"}),
    ]


def test_full_voter_set_dead_voter_without_healthy_learner_is_still_removed() -> None:
    # Four voters remain: a quorum of 3 of 4 live voters.
    members = [*alive("n1", "n2", "n3", "n4", "n6"), dead("n5")]
    change = step(ms(FULL, {"n6"}), members, down_for={"n5": LONG}, commit=1000,
                  matches={"n6": 0})
    assert change is not None and change.membership == ms(FULL - {"n5"}, {"n6"})


def test_not_full_voter_set_promotes_before_removing() -> None:
    # Three voters, one long dead, one healthy learner: promote first (rule 3), then the
    # dead voter goes (rule 4) once a learner has replaced it.
    members = [*alive("n1", "n2", "n4"), dead("n3")]
    down = {"n3": LONG}
    change = step(ms({"n1", "n2", "n3"}, {"n4"}), members, down_for=down)
    assert change is not None and change.membership == ms({"n1", "n2", "n3", "n4"})
    change = step(change.membership, members, down_for=down)
    assert change is not None and change.membership == ms({"n1", "n2", "n4"})
    assert "n3" in change.why and "removed" in change.why
    assert step(change.membership, members, down_for=down) is None


def test_dead_voter_kept_when_only_two_voters_would_remain_and_no_learner() -> None:
    members = [*alive("n1", "n2"), dead("n3")]
    assert step(ms({"n1", "n2", "n3"}), members, down_for={"n3": 10 * LONG}) is None


def test_dead_voter_kept_with_only_a_lagging_learner_in_a_three_voter_set() -> None:
    members = [*alive("n1", "n2", "n4"), dead("n3")]
    assert step(ms({"n1", "n2", "n3"}, {"n4"}), members, down_for={"n3": LONG},
                commit=10_000, matches={"n4": 1}) is None


def test_dead_voter_of_four_is_removed_leaving_three() -> None:
    members = [*alive("n1", "n2", "n3"), dead("n4")]
    change = step(ms({"n1", "n2", "n3", "n4"}), members, down_for={"n4": LONG})
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})
    # ... and no further: now three voters.
    members = [*alive("n1", "n2"), dead("n3")]
    assert step(change.membership, members, down_for={"n3": LONG}) is None


@pytest.mark.parametrize("voters", [{"n1", "n2"}, {"n1", "n2", "n3"}])
def test_small_groups_never_remove_a_dead_voter_without_replacement(voters: set[str]) -> None:
    dead_one = max(voters)
    members = [*alive(*(voters - {dead_one})), dead(dead_one)]
    assert step(ms(voters), members, down_for={dead_one: LONG}) is None


def test_voter_down_for_less_than_replace_after_is_kept() -> None:
    members = [*alive("n1", "n2", "n3", "n5", "n6"), dead("n4")]
    membership = ms(FULL, {"n6"})
    assert step(membership, members, down_for={"n4": POLICY.replace_after_s - 0.001}) is None
    # replace_after_s itself is long enough.
    change = step(membership, members, down_for={"n4": POLICY.replace_after_s})
    assert change is not None and change.membership == ms(FULL - {"n4"}, {"n6"})


def test_voter_unknown_to_gossip_is_kept() -> None:
    # plan() alone: a voter with no down time is kept. (DownTimes gives members missing
    # from the view a down time, so a voter gossip has reaped is still replaced.)
    members = alive("n1", "n2", "n3", "n6")
    assert step(ms({"n1", "n2", "n3", "n4"}), members[:3]) is None
    change = step(ms(FULL, {"n6"}), members)
    assert change is None


def test_suspect_voter_is_not_removed() -> None:
    members = [*alive("n1", "n2", "n3", "n4"), member("n5", SUSPECT)]
    assert step(ms(FULL), members) is None


def test_alive_voter_is_never_removed() -> None:
    assert step(ms(FULL, {"n6"}), alive("n1", "n2", "n3", "n4", "n5", "n6")) is None


def test_lowest_dead_voter_is_removed_first() -> None:
    members = [*alive("n1", "n2", "n3"), dead("n5"), dead("n4")]
    change = step(ms(FULL), members, down_for={"n5": LONG, "n4": LONG})
    assert change is not None and change.membership == ms(FULL - {"n4"})
    change = step(change.membership, members, down_for={"n5": LONG, "n4": LONG})
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})
    assert step(change.membership, members, down_for={"n5": LONG, "n4": LONG}) is None


# -- the leader itself ----------------------------------------------------------------------


@pytest.mark.parametrize("state", [DEAD, LEFT, SUSPECT])
def test_leader_never_removes_itself_even_if_gossip_says_it_is_dead(state: MemberState
                                                                    ) -> None:
    members = [member("n1", state), *alive("n2", "n3", "n4", "n5", "n6")]
    down = {"n1": 10 * LONG}
    assert step(ms(FULL, {"n6"}), members, down_for=down) is None
    assert step(ms(FULL), members[:5], down_for=down) is None
    assert step(ms({"n1", "n2", "n3", "n4"}), members[:4], down_for=down) is None
    # A lone leader gossip declared dead keeps itself too.
    assert step(ms({"n1"}), members[:1], down_for=down) is None


def test_leader_removes_others_but_not_itself_when_everyone_is_down() -> None:
    members = [dead("n1"), dead("n2"), dead("n3"), dead("n4"), dead("n5")]
    down = {n: LONG for n in FULL}
    membership = ms(FULL)
    while (change := step(membership, members, down_for=down)) is not None:
        assert ME in change.membership.voters
        membership = change.membership
    assert membership == ms({"n1", "n4", "n5"})


def test_leader_counts_itself_alive_for_its_own_promotion() -> None:
    # Not a case the leader meets (a leader votes), but the rule is that `me` is alive.
    change = step(ms({"n2"}, {"n1"}), [member("n1", DEAD), member("n2")], me="n1")
    assert change is not None and change.membership == ms({"n1", "n2"})


# -- rule 4: long-dead learners -------------------------------------------------------------


@pytest.mark.parametrize("state", [DEAD, LEFT])
def test_long_dead_learner_is_removed(state: MemberState) -> None:
    change = step(ms({"n1", "n2", "n3"}, {"n4"}), [*alive("n1", "n2", "n3"),
                                                   member("n4", state)],
                  down_for={"n4": LONG})
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})
    assert "n4" in change.why and "removed" in change.why


def test_recently_dead_learner_is_kept() -> None:
    assert step(ms({"n1"}, {"n2"}), [member("n1"), dead("n2")], down_for={"n2": 1.0}) is None


def test_long_dead_learners_removed_lowest_first_after_promotions() -> None:
    members = [*alive("n1", "n2"), dead("n3"), dead("n4")]
    down = {"n3": LONG, "n4": LONG}
    membership = ms({"n1"}, {"n2", "n3", "n4"})
    history = []
    while (change := step(membership, members, down_for=down)) is not None:
        membership = change.membership
        history.append(membership)
    assert history == [ms({"n1", "n2"}, {"n3", "n4"}), ms({"n1", "n2"}, {"n4"}),
                       ms({"n1", "n2"})]


def test_dead_voter_removal_comes_before_dead_learner_removal() -> None:
    members = [*alive("n1", "n2", "n3"), dead("n4"), dead("n6")]
    down = {"n4": LONG, "n6": LONG}
    change = step(ms({"n1", "n2", "n3", "n4"}, {"n6"}), members, down_for=down)
    assert change is not None and change.membership == ms({"n1", "n2", "n3"}, {"n6"})
    change = step(change.membership, members, down_for=down)
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})


def test_dead_learner_is_removed_even_when_a_dead_voter_must_stay() -> None:
    members = [*alive("n1", "n2"), dead("n3"), dead("n4")]
    down = {"n3": LONG, "n4": LONG}
    change = step(ms({"n1", "n2", "n3"}, {"n4"}), members, down_for=down)
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})
    assert step(change.membership, members, down_for=down) is None


# -- DownTimes ------------------------------------------------------------------------------


def test_down_times_empty_while_everyone_is_alive_or_suspected() -> None:
    down = DownTimes()
    assert down.update(0.0, view(*alive("n1", "n2"), member("n3", SUSPECT))) == {}
    assert down.update(5.0, view()) == {}


def test_down_times_count_from_the_first_time_seen_dead_or_left() -> None:
    down = DownTimes()
    assert down.update(10.0, view(member("n1"), dead("n2"))) == {"n2": 0.0}
    assert down.update(15.0, view(member("n1"), dead("n2"))) == {"n2": 5.0}
    # Dead then left: still down, since the first time.
    assert down.update(22.5, view(member("n1"), dead("n2", LEFT), dead("n3", LEFT))) == {
        "n2": 12.5, "n3": 0.0}
    assert down.update(30.0, view(dead("n2"), dead("n3"))) == {"n2": 20.0, "n3": 7.5}


def test_down_times_reset_when_a_member_is_alive_again() -> None:
    down = DownTimes()
    down.update(0.0, view(dead("n2")))
    assert down.update(100.0, view(dead("n2"))) == {"n2": 100.0}
    assert down.update(101.0, view(member("n2"))) == {}
    assert down.update(102.0, view(dead("n2"))) == {"n2": 0.0}
    assert down.update(105.0, view(dead("n2"))) == {"n2": 3.0}


def test_down_times_reset_when_a_member_is_suspected_again() -> None:
    # SUSPECT after DEAD happens when a member refutes with a higher incarnation then
    # is suspected again: it is no longer counted as down.
    down = DownTimes()
    down.update(0.0, view(dead("n2")))
    assert down.update(50.0, view(member("n2", SUSPECT))) == {}
    assert down.update(60.0, view(dead("n2"))) == {"n2": 0.0}


def test_down_times_forget_members_gone_from_the_view() -> None:
    down = DownTimes()
    down.update(0.0, view(dead("n2")))
    assert down.update(10.0, view()) == {}
    assert down.update(20.0, view(dead("n2"))) == {"n2": 0.0}


def test_down_times_drive_plan_replacement_only_after_replace_after() -> None:
    """The steward loop: DownTimes over time, fed to plan."""
    down = DownTimes()
    membership = ms(FULL, {"n6"})
    dead_view = view(*alive("n1", "n2", "n3", "n5", "n6"), dead("n4"))
    alive_view = view(*alive("n1", "n2", "n3", "n4", "n5", "n6"))

    def at(now: float, v: MembershipView) -> Change | None:
        return plan(ME, membership, {n: 100 for n in membership.members}, 100, v,
                    down.update(now, v), POLICY)

    assert at(0.0, dead_view) is None
    assert at(29.0, dead_view) is None
    assert at(29.9, alive_view) is None  # n4 is alive again: its clock restarts
    assert at(31.0, dead_view) is None
    assert at(60.0, dead_view) is None
    change = at(61.0, dead_view)
    assert change is not None and change.membership == ms(FULL - {"n4"}, {"n6"})


# -- invariants over random situations ------------------------------------------------------


IDS = [f"n{i}" for i in range(1, 10)]
STATES = [ALIVE, ALIVE, ALIVE, SUSPECT, DEAD, LEFT]


def random_view(rng: random.Random) -> tuple[MembershipView, dict[str, float]]:
    members = []
    down: dict[str, float] = {}
    for node_id in IDS:
        if rng.random() < 0.15:
            continue  # unknown to gossip
        state = rng.choice(STATES)
        fence = rng.choice(["f1", "f2"]) if rng.random() < 0.2 else None  # an empty log
        members.append(member(node_id, state, raft=rng.random() < 0.8, tags=MappingProxyType(
            {"raft": "member", "fence": fence}) if fence else None))
        if state in (DEAD, LEFT):
            down[node_id] = rng.choice([0.0, 5.0, 29.9, 30.0, 45.0, 1000.0])
    return view(*members), down


def random_membership(rng: random.Random, me: str) -> Membership:
    others = [n for n in IDS if n != me]
    rng.shuffle(others)
    voters = {me, *others[:rng.randint(0, MAX_VOTERS - 1)]}
    rest = others[len(voters) - 1:]
    learners = set(rest[:rng.randint(0, len(rest))])
    return Membership(frozenset(voters), frozenset(learners))


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_when_plan_is_applied_repeatedly(seed: int) -> None:
    rng = random.Random(seed)
    me = rng.choice(IDS)
    membership = random_membership(rng, me)
    steady = rng.random() < 0.5  # half the runs keep one view, half change it every step
    v, down = random_view(rng)
    policy = Policy(replace_after_s=30.0, max_voters=rng.choice([3, 5, 5]),
                    catch_up_slack=rng.choice([0, 10, 256]))
    changes = 0
    for i in range(60):
        if not steady:
            v, down = random_view(rng)
        commit = rng.randint(0, 500)
        matches = {n: rng.randint(0, commit) for n in membership.members
                   if rng.random() < 0.9}
        change = plan(me, membership, matches, commit, v, down, policy)
        if change is None:
            if steady:
                break  # a fixed point: a steady view gives no more changes
            continue
        new = change.membership
        changes += 1
        assert new != membership, change
        assert len(new.voters ^ membership.voters) <= 1, (membership, change)
        # A single-server change: one node joins, leaves, or changes role; or, the members
        # the same, one is admitted (the fence of its empty log acknowledged).
        moved = len(new.members ^ membership.members) + len(
            (new.voters & membership.learners) | (new.learners & membership.voters))
        admitted = new.admitted - membership.admitted
        assert moved == 1 or (moved == 0 and len(admitted) == 1), (membership, change)
        fences = {m.node_id: m.tags.get("fence") for m in v.members if m.state is ALIVE}
        for node, fence in admitted:
            assert fences.get(node) == fence and node != me, change
        # Members that stay keep their admissions (but for a new fence of the one admitted).
        again = {node for node, _ in admitted}
        assert {(n, f) for n, f in membership.admitted
                if n in new.members and n not in again} <= new.admitted
        assert new.voters, change
        assert len(new.voters) <= max(policy.max_voters, len(membership.voters))
        assert len(new.voters) <= MAX_VOTERS
        assert me in new.voters, change
        assert not new.voters & new.learners
        states = {m.node_id: m.state for m in v.members}
        for removed in membership.members - new.members:
            # Only the long-dead leave, and never the leader.
            assert removed != me
            assert down.get(removed, 0.0) >= policy.replace_after_s, change
            assert states.get(removed) in (DEAD, LEFT)
        for promoted in new.voters - membership.voters:
            assert promoted in membership.learners
            assert states.get(promoted) is ALIVE
            assert matches.get(promoted, 0) + policy.catch_up_slack >= commit
        for joined in new.members - membership.members:
            assert joined in new.learners
            assert states.get(joined) is ALIVE
        membership = new
    else:
        assert not steady, f"no fixed point after 60 steps: {membership}"
    assert changes <= 60


def test_expected_members_missing_from_the_view_count_as_down() -> None:
    times = DownTimes()
    view = MembershipView(tuple(alive("n1", "n2")))
    assert times.update(0.0, view, {"n1", "n2", "n3"}) == {"n3": 0.0}
    assert times.update(50.0, view, {"n1", "n2", "n3"}) == {"n3": 50.0}
    policy = Policy(replace_after_s=30.0)
    change = plan("n1", ms({"n1", "n2", "n3", "n4"}), {}, 0, view,
                  times.update(60.0, view, {"n1", "n2", "n3", "n4"}), policy)
    assert change is not None and "n3" not in change.membership.voters
    back = MembershipView(tuple(alive("n1", "n2", "n3")))
    assert times.update(61.0, back, {"n1", "n2", "n3"}) == {}


# -- empty logs: admitting a fence ---------------------------------------------------------


def fenced(node_id: str, fence: str = "f1", **extra: str) -> Member:
    return member(node_id, tags=MappingProxyType({"raft": "member", "fence": fence, **extra}))


def test_a_voter_back_with_an_empty_log_is_admitted_and_stays_a_voter() -> None:
    change = step(ms({"n1", "n2", "n3"}), [*alive("n1", "n2"), fenced("n3")])
    assert change is not None
    assert change.membership == ms({"n1", "n2", "n3"}).admit("n3", "f1")
    assert "n3" in change.why and "empty log" in change.why
    # Admitted: nothing more to do while its tag lingers in gossip.
    assert step(change.membership, [*alive("n1", "n2"), fenced("n3")]) is None
    # Its disk is replaced again: a new fence, admitted in place of the old one.
    again = step(change.membership, [*alive("n1", "n2"), fenced("n3", "f2")])
    assert again is not None and again.membership.admitted == {("n3", "f2")}


def test_a_learner_back_with_an_empty_log_is_admitted_before_it_is_promoted() -> None:
    change = step(ms({"n1", "n2"}, {"n3"}), [*alive("n1", "n2"), fenced("n3")])
    assert change is not None and change.membership == ms({"n1", "n2"}, {"n3"}).admit("n3", "f1")
    promoted = step(change.membership, [*alive("n1", "n2"), fenced("n3")])
    assert promoted is not None and promoted.membership == ms(
        {"n1", "n2", "n3"}).admit("n3", "f1")


def test_a_new_node_joins_as_a_learner_admitted_with_its_fence() -> None:
    change = step(ms({"n1"}), [*alive("n1"), fenced("n2")])
    assert change is not None and change.membership == ms({"n1"}, {"n2"}).admit("n2", "f1")
    assert "learner" in change.why


def test_admission_comes_first_and_changes_keep_admissions() -> None:
    membership = ms({"n1", "n2", "n3", "n4"}, {"n5"}).admit("n5", "f0")
    members = [*alive("n1", "n2", "n4", "n5", "n6"), fenced("n3"), dead("n9")]
    change = step(membership, members)  # before n6 joins and n5 is promoted
    assert change is not None and change.membership.admitted == {("n5", "f0"), ("n3", "f1")}
    change = step(change.membership, members)
    assert change is not None and change.membership.learners == {"n5", "n6"}
    assert change.membership.admitted == {("n5", "f0"), ("n3", "f1")}
    change = step(change.membership, members)
    assert change is not None and change.membership.voters == {"n1", "n2", "n3", "n4", "n5"}
    assert change.membership.admitted == {("n5", "f0"), ("n3", "f1")}


def test_a_removed_member_loses_its_admission() -> None:
    membership = ms({"n1", "n2", "n3"}, {"n4"}).admit("n4", "f1")
    change = step(membership, [*alive("n1", "n2", "n3"), dead("n4")], down_for={"n4": LONG})
    assert change is not None and change.membership == ms({"n1", "n2", "n3"})


def test_fences_of_other_groups_of_the_dead_or_of_the_leader_itself_are_ignored() -> None:
    voters = ms({"n1", "n2", "n3"})
    other = fenced("n3", group="g2")
    assert plan(ME, voters, {}, 0, view(*alive("n1", "n2"), other), {}, POLICY,
                group="g1") is None
    assert step(voters, [*alive("n1", "n2"), member("n3", DEAD, tags=fenced("n3").tags)]) \
        is None
    assert step(voters, [fenced("n1"), *alive("n2", "n3")]) is None


def test_with_a_group_only_members_of_that_group_join() -> None:
    ours = member("n4", tags=MappingProxyType({"raft": "member", "group": "g1"}))
    theirs = member("n5", tags=MappingProxyType({"raft": "member", "group": "g2"}))
    untagged = member("n6")  # runs Raft, but says no group
    members = [*alive("n1", "n2", "n3"), theirs, untagged, ours]
    voters = ms({"n1", "n2", "n3"})
    change = plan(ME, voters, {}, 0, view(*members), {}, POLICY, group="g1")
    assert change is not None and change.membership == ms({"n1", "n2", "n3"}, {"n4"})
    assert plan(ME, ms({"n1", "n2", "n3"}, {"n4"}), {"n4": 0}, 0,
                view(*members), {}, POLICY, group="g1") is not None  # n4 promoted, not n5/n6
    without_ours = [m for m in members if m is not ours]
    assert plan(ME, voters, {}, 0, view(*without_ours), {}, POLICY, group="g1") is None
    # No group (data from before groups had ids): anyone running Raft may join.
    change = plan(ME, voters, {}, 0, view(*without_ours), {}, POLICY)
    assert change is not None and change.membership.learners == {"n5"}
