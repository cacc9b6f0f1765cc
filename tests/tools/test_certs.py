"""blobstore-certs: a CA and node certificates a node accepts, keys kept private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from node.net.tls import TlsSetupError, load_tls
from tools.certs import LOCAL_NODES, main


def test_a_ca_and_a_node_certificate_for_an_address(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", str(tmp_path)]) == 0
    assert main(["node", str(tmp_path), "node-7", "--ip", "10.0.0.7", "--dns", "n7.example"]) == 0
    made = capsys.readouterr().out.split()
    assert made == [str(tmp_path / f) for f in ("ca.crt", "ca.key", "node-7.crt", "node-7.key")]
    for key in ("ca.key", "node-7.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    # What a node checks at start-up: the key fits, the CA signed it, it names its address.
    load_tls(tmp_path / "node-7.crt", tmp_path / "node-7.key", tmp_path / "ca.crt",
             own_host="10.0.0.7")
    with pytest.raises(TlsSetupError, match="does not name"):
        load_tls(tmp_path / "node-7.crt", tmp_path / "node-7.key", tmp_path / "ca.crt",
                 own_host="10.0.0.8")


def test_nothing_is_overwritten_and_an_address_is_required(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", str(tmp_path)]) == 0
    key = (tmp_path / "ca.key").read_bytes()
    assert main(["ca", str(tmp_path)]) == 1
    assert (tmp_path / "ca.key").read_bytes() == key
    assert main(["node", str(tmp_path), "n1"]) == 1
    assert "at least one --ip or --dns" in capsys.readouterr().err


def test_local_makes_only_what_is_missing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.split()) == 2 + 2 * len(LOCAL_NODES)
    (tmp_path / "node2.key").unlink()
    (tmp_path / "node2.crt").unlink()
    before = (tmp_path / "node1.crt").read_bytes()
    assert main(["local", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "node2.crt"),
                                               str(tmp_path / "node2.key")]
    assert (tmp_path / "node1.crt").read_bytes() == before
    for name in LOCAL_NODES:
        for host in ("127.0.0.1", "::1"):
            load_tls(tmp_path / f"{name}.crt", tmp_path / f"{name}.key", tmp_path / "ca.crt",
                     own_host=host)
