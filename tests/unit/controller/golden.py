"""Golden files for the pure builders: compare, or rewrite with SAFEHOLD_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SAFEHOLD_UPDATE_GOLDEN") == "1"


def assert_golden(name: str, manifest: Any) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if UPDATE:
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with SAFEHOLD_UPDATE_GOLDEN=1 and review the diff"
    assert text == path.read_text(), (
        f"{path.name} differs from the builder's output; if the change is intended, rerun with"
        " SAFEHOLD_UPDATE_GOLDEN=1 and review `git diff`"
    )
