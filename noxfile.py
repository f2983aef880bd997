"""Nox sessions: the end-to-end suite per QEMU major version, tests per Python, lint, typecheck.

    nox -l                  # list them
    nox -s qemu10           # the end-to-end suite on QEMU 10.x, exactly
    nox -s tests-3.9        # the tests on one Python

A ``qemuN`` session is skipped when no QEMU N can be found or fetched (the
message says how to supply one); under ``CI=true`` or ``AERO_REQUIRE_QEMU=1``
it fails instead, so a CI run can never pass by skipping everything.
Where QEMU N comes from: tools/qemu_builds.py and the README.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tools import qemu_builds  # noqa: E402  (stdlib only, importable before any venv)

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
QEMU_MAJORS = [7, 8, 9, 10]
QEMU_CACHE = ROOT / ".nox" / "qemu-builds"

QEMU_MAJORS_IN_CI = [7, 10]
nox.options.sessions = ["lint", "typecheck", "tests", *(f"qemu{m}" for m in QEMU_MAJORS_IN_CI)]


def _expose_pyenv_interpreters() -> None:
    """pyenv's shims run only the selected version; put every installed 3.x on PATH for nox to find."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not root.is_dir():
        return
    extra = []
    for minor in PYTHONS:
        found = sorted(root.glob(f"{minor}.*/bin/python{minor}"), key=lambda p: [int(x) for x in
                       p.parts[-3].split(".") if x.isdigit()])
        if found:
            extra.append(str(found[-1].parent))
    os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()


def _must_not_skip() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("AERO_REQUIRE_QEMU") == "1"


def _workers() -> Tuple[List[str], Dict[str, str]]:
    """pytest-xdist arguments for the end-to-end suite, and the environment they need.

    Each guest keeps about one core busy under TCG, so the suite runs on one
    worker per core (at most 4; ``AERO_TEST_WORKERS=N`` to choose). The tests
    serve their guests on the default ports, so several workers need a network
    namespace each (tests/conftest.py), which needs root; without it the suite
    runs on one worker.
    """
    wanted = os.environ.get("AERO_TEST_WORKERS", "")
    count = int(wanted) if wanted.isdigit() else min(4, os.cpu_count() or 1)
    if count < 2 or os.geteuid() != 0 or shutil.which("ip") is None:
        return [], {}
    return ["-n", str(count), "--dist", "loadfile"], {"AERO_TEST_WORKER_NETNS": "1"}


def _qemu_session(major: int):  # type: ignore[no-untyped-def]
    def session_body(session: nox.Session) -> None:
        try:
            build = qemu_builds.find(major, QEMU_CACHE)
        except qemu_builds.QemuBuildError as exc:
            if _must_not_skip():
                session.error(f"QEMU {major}: {exc}")
            session.skip(f"QEMU {major}: {exc}")
        session.log(f"QEMU {build.version} ({build.origin}): {build.binary}")
        if build.major != major:
            session.error(f"{build.binary} is QEMU {build.version}, not {major}.x")
        session.install("-r", "requirements-test.txt")
        # The fake-QEMU, Wine and host-side tests are the same on every QEMU: they run in the first session only.
        first = major == QEMU_MAJORS_IN_CI[0]
        selection = ["-m", "e2e or fake or wine", "tests"] if first else ["-m", "not fake and not host_side",
                                                                         "tests/e2e"]
        workers, env = _workers()
        session.run("python", "-m", "pytest", "-ra", *workers, *selection, *session.posargs,
                    env={"AERO_TEST_QEMU": build.binary, **env})

    session_body.__doc__ = f"The end-to-end selftest suite on the test guest, on QEMU {major}.x exactly."
    return session_body


for _major in QEMU_MAJORS:
    nox.session(name=f"qemu{_major}", reuse_venv=True)(_qemu_session(_major))


@nox.session(python=PYTHONS, reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Unit tests and one live PASS run, on each supported Python."""
    session.install("-r", "requirements-test.txt")
    session.run("python", "-m", "pytest", "-ra", "-m", "not e2e and not fake and not wine", *session.posargs)
    session.run("python", "-m", "pytest", "-ra", "tests/e2e/test_selftest.py::test_pass_with_defaults")


@nox.session(reuse_venv=True)
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session(reuse_venv=True)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on harness/, images/ and tasks.py (settings in pyproject.toml)."""
    session.install("mypy==2.4.1", "qemu.qmp==0.0.6", "nox==2026.10.20", "invoke==2.2.1")
    session.run("mypy")
