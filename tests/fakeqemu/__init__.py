"""A fake qemu-system-x86_64 for tests: a real executable that speaks QMP and plays a scripted guest.

Its script keys are documented at the top of ``qemu-system-x86_64`` in this folder.

    env = script_env(tmp_path, serial=[{"after": 0.1, "write": "hello\\r\\n"}], then="shutdown")
    subprocess.Popen([str(FAKE_QEMU), *argv], env=env)
    ...
    assert [r["command"] for r in records(env["FAKE_QEMU_RECORD"])] == ["qmp_capabilities", "cont"]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

FAKE_QEMU: Path = Path(__file__).resolve().parent / "qemu-system-x86_64"


def script_env(tmp_path: Path, **script: Any) -> Dict[str, str]:
    """Write ``script`` as the fake's JSON script in ``tmp_path`` and return an environment
    (a copy of this one) that runs the fake with it and records its QMP commands to a fresh
    file, ``env["FAKE_QEMU_RECORD"]``.

    The harness caches what it probes of a QEMU binary per path and version, while the fake
    answers by its script: the environment gives the harness a cache of its own in tmp_path.
    """
    script_path = tmp_path / "fakeqemu-script.json"
    record_path = tmp_path / "fakeqemu-record.jsonl"
    script_path.write_text(json.dumps(script), encoding="utf-8")
    record_path.write_text("", encoding="utf-8")
    env = dict(os.environ)
    env.update(
        FAKE_QEMU_SCRIPT=str(script_path),
        FAKE_QEMU_RECORD=str(record_path),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    return env


def records(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The QMP commands the fake received: {"t", "command", "arguments"} each, in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
