"""What clipva asks of an environment: ranges in pyproject.toml, one tested point in the lock files, and the
set-up that installs exactly that point."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from conftest import REPO
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(section: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, section)}


def _lock(name: str) -> dict[str, tuple[Version, Requirement]]:
    """name -> (pinned version, the line as a requirement, marker included)."""
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line} is not a pin"
            pins[canonicalize_name(req.name)] = (Version(spec.version), req)
    return pins


RUNTIME = _requirements(PROJECT["dependencies"])
TEST = _requirements(PROJECT["optional-dependencies"]["test"])


@pytest.mark.parametrize("name", ["torch", "torchvision", "open-clip-torch", "peft", "snakemake"])
def test_the_big_libraries_are_ranges_that_admit_another_release(name):
    """A user's own (CUDA) build of torch, one release older or newer, stays when clipva is installed beside it."""
    spec = RUNTIME[name].specifier
    assert not any(s.operator in ("==", "===") for s in spec), f"pyproject.toml pins {name}: declare a range"
    locked = _lock("requirements.lock")[name][0]
    older = [Version(f"{locked.major}.{locked.minor - 1}.0")] if locked.minor else []
    assert any(spec.contains(v) for v in [*older, Version(f"{locked.major}.{locked.minor + 1}.0")]), (name, str(spec))


@pytest.mark.parametrize("lock, required", [("requirements.lock", RUNTIME), ("requirements-test.lock", RUNTIME | TEST)])
def test_every_requirement_is_pinned_in_the_lock_inside_its_range(lock, required):
    pins = _lock(lock)
    for name, req in required.items():
        assert name in pins, f"{lock} has no pin for {req}"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{lock}: {name}=={pins[name][0]} not in {req}"


def test_the_test_lock_is_the_runtime_lock_plus_the_test_tools():
    runtime, test = _lock("requirements.lock"), _lock("requirements-test.lock")
    differ = {n: (v, test.get(n, (None,))[0]) for n, (v, _) in runtime.items() if test.get(n, (None,))[0] != v}
    assert not differ, f"the two lock files pin these differently: {differ}"


def test_the_conda_environment_pins_what_the_lock_pins():
    pins = _lock("requirements.lock")
    conda = re.findall(r"^\s*- ([A-Za-z0-9_.-]+)==(\S+)\s*$", (REPO / "envs/clipva.yaml").read_text(), re.M)
    assert {canonicalize_name(n) for n, _ in conda} >= set(RUNTIME), "envs/clipva.yaml misses a dependency"
    wrong = [
        (n, v, str(pins[canonicalize_name(n)][0])) for n, v in conda if Version(v) != pins[canonicalize_name(n)][0]
    ]
    assert not wrong, f"envs/clipva.yaml differs from requirements.lock: {wrong}"


def test_this_environment_is_the_tested_set():
    """scripts/setup.sh --test installs the lock exactly (CI runs the tests in what it installed)."""
    env = default_environment()
    wrong = []
    for name, (pinned, req) in _lock("requirements-test.lock").items():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        try:
            have = Version(version(name))
        except PackageNotFoundError:
            wrong.append(f"{name}: missing, lock has {pinned}")
            continue
        if have.public != pinned.public:  # a local tag (+cpu) is the build, not the release
            wrong.append(f"{name}: {have}, lock has {pinned}")
    assert not wrong, "the environment is not requirements-test.lock (run scripts/setup.sh --test):\n" + "\n".join(
        wrong
    )
