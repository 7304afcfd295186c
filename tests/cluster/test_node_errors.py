"""What the node says when it cannot start (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import node as node_module
from tests.infra.netns import TestNetns
from tests.infra.node import Node
from tests.infra.procs import ServerError


def test_outside_the_test_namespace_it_refuses_and_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "missing_binaries", lambda: [])
    with pytest.raises(ServerError, match=r"only inside the test network namespace.*`cluster`"):
        Node(tmp_path, netns=TestNetns("safehold-never-entered")).start()
    assert not Path("/run/netns/safehold-never-entered").exists()


def test_missing_pieces_are_named_with_what_installs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "kube_binary", lambda name: None)
    with pytest.raises(ServerError, match=r"kubelet \(scripts/build-kube.sh\)"):
        Node(tmp_path).start()
