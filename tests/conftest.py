"""Shared fixtures. The node fixtures live in ``node.testing`` so tools can use them too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.testing.inprocess import NodeHandle, running_node


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the long campaigns marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow campaign: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeHandle]:
    async with running_node(tmp_path / "node") as handle:
        yield handle


@pytest.fixture
async def admin(node: NodeHandle) -> dict[str, str]:
    return await node.admin_headers()
