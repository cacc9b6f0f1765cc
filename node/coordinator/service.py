"""This node's place in the coordinator group: bootstrap or join, run Raft, steward it.

A node whose Raft state is empty first decides, from gossip, whether it forms
the first voter set or joins an existing cluster (``node.raft.bootstrap``);
a node with Raft state simply resumes. Either way it then runs its
``RaftDriver`` and publishes ``raft=member`` in its gossip tags, which is how
the leader learns that it can be added as a learner.

A node that joins with empty Raft state may be a voter whose disk was replaced
(same node id, nothing remembered): it starts *fenced* with a random value
(``HardState.fence``), published as its ``fence`` tag, and neither votes nor
stands until the leader's steward has admitted that value in the membership
and the node holds that entry (``node.raft.core``). A new node goes the same
way, harmlessly; the first voters of a group, which join their bootstrapper
with empty logs too, do not (``node.raft.bootstrap``).

While this node leads, the steward loop keeps the voter set healthy
(``node.coordinator.steward``) and, once, writes the metadata's own bootstrap
(the admin user and the token signing key) if nobody has yet. On a graceful
stop a leader hands leadership to the most up-to-date voter first, so the
cluster does not wait out an election timeout.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from node import datadir
from node.config import NodeConfig
from node.errors import Unavailable
from node.coordinator.steward import DownTimes, Policy, plan
from node.gossip.members import MembershipView
from node.meta.log import CommitObserver
from node.meta.replicated import ReplicatedLog
from node.meta.state import MetaState
from node.raft import storage
from node.raft.bootstrap import (MEMBER, NEW, TAG_BOOT, TAG_EXPECT, TAG_FENCE, TAG_GROUP,
                                 TAG_RAFT, Bootstrap, Bootstrapper, Join, Wait)
from node.raft import codec
from node.raft.core import ChangeInProgress, NotLeader, RaftConfig
from node.raft.driver import RaftDriver
from node.raft.messages import Membership
from node.raft.snapshots import SnapshotFiles
from node.rpc.peers import PeerNet
from node.store.db import Database

if TYPE_CHECKING:
    import random  # noqa: TID251 - only the type: the generator is seeded and injected

log = logging.getLogger(__name__)

#: Gossip tag: the Raft wire version this node reads (``node.raft.codec``).
TAG_WIRE = "rw"
WIRE_TAGS = {TAG_WIRE: str(codec.VERSION)}
#: How often the leader reviews the membership, and an undecided node its gossip view.
STEWARD_INTERVAL_S = 0.5
DECIDE_INTERVAL_S = 0.1


class Coordinator:
    def __init__(self, config: NodeConfig, raft_db: Database, meta_log: ReplicatedLog,
                 peers: PeerNet, state: MetaState, rng: random.Random,
                 view: Callable[[], MembershipView], *, has_state: bool,
                 group: str | None, settle_s: float, bootstrap_metadata: Callable[[], Awaitable[None]],
                 observer: CommitObserver | None = None) -> None:
        self.config = config
        self.raft_config = RaftConfig(election_timeout_s=config.election_timeout_s,
                                      heartbeat_interval_s=config.election_timeout_s / 5,
                                      transfer_timeout_s=config.election_timeout_s * 2,
                                      lease_s=config.read_lease_s)
        self._raft_db = raft_db
        self._log = meta_log
        self._peers = peers
        self._state = state
        self._rng = rng
        self._has_state = has_state
        self._settle_s = settle_s
        self._bootstrap_metadata = bootstrap_metadata
        self._observer = observer
        self._files = SnapshotFiles(config.data_dir / datadir.SNAPSHOT_DIR, peers)
        self._view = view
        #: The Raft group this node belongs to (None until decided; None for data written
        #: before groups had ids, which then accept every member).
        self.group = group
        #: What this node says about itself in gossip; ``publish`` spreads changes.
        self.tags = self._member_tags() if has_state else self._new_tags()
        self.publish: Callable[[dict[str, str]], None] | None = None
        self.driver: RaftDriver | None = None
        #: Why this node is not in the Raft group yet (None once it runs).
        self.waiting: str | None = "starting"
        self._policy = Policy(replace_after_s=config.voter_replace_s)
        self._founding = False

    def _new_tags(self, boot: str = "") -> dict[str, str]:
        tags = {TAG_RAFT: NEW, TAG_EXPECT: str(self.config.bootstrap_expect), **WIRE_TAGS}
        return {**tags, TAG_BOOT: boot} if boot else tags

    def _member_tags(self, fence: str | None = None) -> dict[str, str]:
        return {TAG_RAFT: MEMBER, **({TAG_GROUP: self.group} if self.group else {}),
                **({TAG_FENCE: fence} if fence else {}), **WIRE_TAGS}

    def _wire_of(self, peer: str) -> int:
        """The Raft wire version ``peer`` reads, as its gossip says (1: it does not say)."""
        member = self._view().get(peer)
        return min(member.version(TAG_WIRE), codec.VERSION) if member is not None else 1

    def _set_tags(self, tags: dict[str, str]) -> None:
        self.tags = tags
        if self.publish is not None:
            self.publish(tags)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Decide, then run the driver and the steward until cancelled; ``started`` once
        the driver runs."""
        bootstrap = None if self._has_state else await self._decide()
        if not self._has_state:
            if bootstrap is not None:  # a new group: a fresh id that no other group has
                self.group = secrets.token_hex(8)
            # Joining with an empty log, maybe a replaced disk: no votes until admitted. (The
            # bootstrapper and the other first voters have never voted.)
            fence = None if bootstrap is not None or self._founding else secrets.token_hex(8)
            group = self.group
            await self._raft_db.write(lambda conn: storage.save_start(conn, group, fence))
            self._set_tags(self._member_tags(fence))
        driver = RaftDriver(self.config.node_id, self.raft_config, self._raft_db,
                            self._log.apply, self._peers, self._rng,
                            applied=self._state.applied_index, bootstrap=bootstrap,
                            observer=self._observer, snapshotter=self._log,
                            files=self._files, snapshot_every=self.config.snapshot_every,
                            accept=self._same_group, wire_of=self._wire_of)
        self.driver = driver
        self._log.attach(driver)
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            self.waiting = None
            nursery.start_soon(self._steward)
            task_status.started()

    async def _decide(self) -> Membership | None:
        """The first voter set if this node writes it; None if it joins (waits to be added;
        ``self._founding`` says whether it is one of the first voters)."""
        cfg = self.config
        if cfg.starts_alone:
            log.info("starting a new cluster with this node as its only voter")
            return Membership(frozenset({cfg.node_id}))
        bootstrapper = Bootstrapper(cfg.node_id, cfg.bootstrap_expect, self._settle_s)
        boot = ""
        while True:
            decision = bootstrapper.decide(trio.current_time(), self._view())
            if isinstance(decision, Join):
                groups = self._groups_of(decision.via)
                if len(groups) > 1:
                    self._note_waiting(f"members of several coordinator groups are visible "
                                       f"({', '.join(sorted(groups))}); refusing to guess")
                    await trio.sleep(DECIDE_INTERVAL_S)
                    continue
                self.group = groups.pop() if groups else None
                self._founding = decision.founding
                log.info("joining the cluster" if decision.founding else
                         "joining the cluster (fenced: no vote until admitted)",
                         extra={"via": decision.via, "group": self.group})
                return None
            # With --join and the default expect of 1 a node only ever joins: it must not
            # start a cluster of its own because its seeds have not answered yet.
            if isinstance(decision, Bootstrap) and (cfg.bootstrap_expect > 1 or not cfg.join):
                log.info("bootstrapping the coordinator group",
                         extra={"voters": sorted(decision.voters)})
                return Membership(decision.voters)
            if isinstance(decision, Wait):
                self._note_waiting(decision.why)
                if decision.boot != boot:
                    boot = decision.boot
                    self._set_tags(self._new_tags(boot))
            await trio.sleep(DECIDE_INTERVAL_S)

    def _note_waiting(self, why: str) -> None:
        if why != self.waiting:
            log.info("waiting to form the coordinator group: %s", why)
        self.waiting = why

    def _groups_of(self, node_ids: tuple[str, ...]) -> set[str]:
        view = self._view()
        return {m.tags[TAG_GROUP] for n in node_ids
                if (m := view.get(n)) is not None and m.tags.get(TAG_GROUP)}

    def _same_group(self, peer: str) -> bool:
        """Raft messages only from members of our own group (as gossip tells it)."""
        if self.group is None:
            return True
        member = self._view().get(peer)
        return member is not None and member.tags.get(TAG_GROUP) == self.group

    async def _steward(self) -> None:
        """On the leader: bootstrap the metadata once, and keep the voter set healthy."""
        assert self.driver is not None
        down = DownTimes()
        while True:
            raft = self.driver.raft
            if raft is not None and self.tags != (tags := self._member_tags(raft.fence)):
                self._set_tags(tags)  # fenced after a restart, or admitted since
            view = self._view()
            members = raft.membership.members if raft is not None else frozenset()
            down_for = down.update(trio.current_time(), view, members)
            if raft is not None and raft.is_leader:
                if self._state.signing_key is None:
                    try:
                        await self._bootstrap_metadata()
                    except Unavailable as exc:
                        log.warning("cannot bootstrap the metadata yet: %s", exc)
                change = plan(self.config.node_id, raft.membership, raft.progress(),
                              raft.commit_index, view, down_for, self._policy,
                              group=self.group)
                if change is not None:
                    try:
                        self.driver.change_membership(change.membership)
                        log.info("membership change: %s", change.why,
                                 extra={"voters": sorted(change.membership.voters),
                                        "learners": sorted(change.membership.learners)})
                    except (NotLeader, ChangeInProgress):
                        pass  # lost leadership, or the last change is still committing
            await trio.sleep(STEWARD_INTERVAL_S)

    async def step_down(self) -> None:
        """If this node leads, hand over to an up-to-date voter and wait (bounded) until
        someone else leads, so a graceful stop costs no election timeout."""
        driver = self.driver
        if driver is None or driver.raft is None or not driver.raft.is_leader:
            return
        target = driver.transfer_leadership()
        if target is None:
            return
        log.info("handing leadership over", extra={"to": target})
        with trio.move_on_after(self.raft_config.transfer_timeout_s):
            while driver.raft.is_leader:
                await trio.sleep(0.01)
