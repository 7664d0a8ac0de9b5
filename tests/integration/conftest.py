"""The integration layer: real Debian 12 guests, real pyinfra and testinfra over SSH.

Fixtures other test modules use:
- ``fleet`` (session): 2 running guests ``lab-01``/``lab-02`` (1 vCPU, 1 GiB, TCG
  ``tb-size=256`` where KVM is unusable) with ``fleet.inventory``, ``fleet.ssh_config``,
  ``fleet.known_hosts``; guests reach this machine's 127.0.0.1 servers at ``10.0.2.2``.
- ``pyinfra_runner`` (session): ``run(*deploys, data=None, limit=None, label=...)`` runs the
  pyinfra CLI on the fleet's inventory and returns a ``PyinfraResult`` (rc, output, per-host
  changes, failed hosts); its wall time lands in the summary table.
- ``clean_guest`` (function): a factory ``clean_guest(name="lab-02")`` that resumes a guest
  as it was saved right after its first boot (``fleet.resume``: seconds, not a boot).
- ``phase_timer``: ``with phase_timer("label"): ...`` adds a row to the summary table.

Where the host cannot run guests (not root, QEMU or mmdebstrap/debootstrap missing), tests skip
with the reason printed in the terminal summary; with ``CI`` set they fail instead.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from gpulab.lab.image import ImagePaths, ensure_image
from tests.fleet import BOOTED, FleetUnderTest
from tests.needs import skip_or_fail
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

REPO = Path(__file__).resolve().parents[2]
UNAVAILABLE: list[str] = []
FLEET_HOSTS = 2


def missing_requirements() -> list[str]:
    """Why guests cannot run here (empty when they can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not root (mmdebstrap --mode=root and chroot need it)")
    for tool in ("qemu-system-x86_64", "qemu-img", "mkfs.ext4"):
        if shutil.which(tool) is None:
            why.append(f"{tool} not installed")
    if shutil.which("mmdebstrap") is None and shutil.which("debootstrap") is None:
        why.append("neither mmdebstrap nor debootstrap installed")
    return why


def require_guests() -> None:
    """Skip loudly, or fail when ``CI`` is set, if this machine cannot boot guests."""
    why = missing_requirements()
    if not why:
        return
    msg = "integration guests unavailable: " + "; ".join(why)
    if msg not in UNAVAILABLE:
        UNAVAILABLE.append(msg)
    skip_or_fail(msg)


@pytest.fixture(scope="session")
def lab_image() -> ImagePaths:
    """The cached Debian 12 image (built on first use, ~2 min)."""
    require_guests()
    t0 = time.monotonic()
    image = ensure_image(log=lambda m: print(m, flush=True))
    label = "image: cache hit" if image.cache_hit else "image: build"
    record_phase(f"{label} (last build {image.build_seconds:.0f} s)", time.monotonic() - t0)
    return image


@pytest.fixture(scope="session")
def fleet(
    lab_image: ImagePaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetUnderTest]:
    """Two booted guests for the whole session; always torn down, leftovers are an error."""
    state = tmp_path_factory.mktemp("fleet")
    f = FleetUnderTest(state, hosts=FLEET_HOSTS, vcpus=1, memory_mib=1024, tb_size_mib=256,
              image=lab_image,
              log=lambda m: print(m, flush=True))
    with f:
        with timed(f"boot {FLEET_HOSTS} guests to SSH (parallel, {f.accel.name})"):
            boot = f.up()
        for name, secs in boot.items():
            record_phase(f"  {name} boot-to-SSH", secs)
        with timed(f"save {FLEET_HOSTS} booted guests (memory + overlay)"):
            for name in f.guests:
                f.save_running(name, BOOTED)
        yield f
        with timed("fleet teardown"):
            f.close()
    left = f.leftovers()
    assert not left, f"fleet teardown left things behind: {left}"


Runner = Callable[..., PyinfraResult]


@pytest.fixture(scope="session")
def pyinfra_runner(fleet: FleetUnderTest) -> Runner:
    """Run the pyinfra CLI against the fleet's inventory; each run is timed in the summary."""

    def run(
        *deploys: str | Path,
        data: Mapping[str, object] | None = None,
        limit: str | None = None,
        label: str | None = None,
        timeout: float = 1200,
    ) -> PyinfraResult:
        result = run_pyinfra(fleet.inventory, *deploys, data=data, limit=limit,
                             timeout=timeout, cwd=REPO)
        names = " + ".join(Path(str(d)).name for d in deploys)
        record_phase(f"pyinfra {label or names} (rc {result.rc})", result.seconds)
        return result

    return run


@pytest.fixture
def clean_guest(fleet: FleetUnderTest) -> Callable[..., str]:
    """Factory: ``clean_guest(name)`` → the guest running as it was right after its first
    boot (memory and disk saved by the ``fleet`` fixture)."""

    def make(name: str = "lab-02") -> str:
        fleet.hand_back_clean(name, "clean guest")
        return name

    return make


@pytest.fixture
def phase_timer() -> Callable[[str], AbstractContextManager[None]]:
    """``with phase_timer("label"):`` adds a timed row to the session summary."""
    return timed


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, regardless of ``-s``, why guests were unavailable."""
    for msg in UNAVAILABLE:
        terminalreporter.write_sep("!", "INTEGRATION TESTS DID NOT RUN", red=True, bold=True)
        terminalreporter.write_line(msg, red=True, bold=True)
