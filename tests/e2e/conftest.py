"""Fixtures for tests that run real ``blobstore-node`` processes (see node.testing.process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testing.process import NodeProcess

StartNode = Callable[..., NodeProcess]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"e2e_rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"e2e_rep_{when}", None), "failed", False)
               for when in ("setup", "call"))


def _make_factory(base: Path, failed: Callable[[], bool]) -> Iterator[StartNode]:
    nodes: list[NodeProcess] = []

    def start(node_id: str = "n1", *args: str, **kwargs: Any) -> NodeProcess:
        """Start a node in ``base/<node_id>``; positional strings are extra flags."""
        data_dir = kwargs.pop("data_dir", base / node_id)
        node = NodeProcess(data_dir, node_id, args=args, **kwargs)
        nodes.append(node)
        return node.start()

    try:
        yield start
    finally:
        for node in nodes:
            node.close()
        if failed():
            for node in nodes:
                print(f"\n===== log of node {node.node_id} ({node.log_path}) =====")
                print(node.log_tail(6000))


@pytest.fixture
def start_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartNode]:
    """``start_node("n1", "--chunk-size", "64KiB")``: a started NodeProcess, killed at teardown."""
    yield from _make_factory(tmp_path, lambda: _failed(request))


@pytest.fixture(scope="module")
def start_module_node(tmp_path_factory: pytest.TempPathFactory,
                      request: pytest.FixtureRequest) -> Iterator[StartNode]:
    """Like ``start_node``, for nodes shared by the tests of one module."""
    failures_before = request.session.testsfailed
    yield from _make_factory(tmp_path_factory.mktemp("shared"),
                             lambda: request.session.testsfailed > failures_before)
