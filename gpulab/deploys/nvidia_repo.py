"""NVIDIA's CUDA apt repository on a host, set up once per run for the driver and the toolkit.

``cuda-keyring`` comes from ``plan.repo.keyring_url`` (``nvidia_repo_base``, a mirror works the
same); the sources file names that base; on Debian the components the route needs are added to
the host's own entries first.
"""

from __future__ import annotations

from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.context import host
from pyinfra.operations import apt, files

from gpulab.deploys.apt import debian_components
from gpulab.deploys.common import missing_packages
from gpulab.deploys.context import host_plan, host_run, host_settings
from gpulab.plan.host import CUDA_KEYRING, HostPlan

KEYRING_GPG = "/usr/share/keyrings/cuda-archive-keyring.gpg"
# A stable place for the downloaded keyring package: pyinfra's temp name would be fetched
# again whenever /tmp is cleaned, turning a second run into a "change".
KEYRING_DEB = f"/var/cache/gpulab/{CUDA_KEYRING}"

def source_path(plan: HostPlan) -> str:
    """The sources file cuda-keyring installs, e.g. ``sources.list.d/cuda-debian12-x86_64.list``."""
    assert plan.repo is not None
    return f"/etc/apt/sources.list.d/cuda-{plan.repo.distro}-{plan.repo.arch}.list"


def source_line(plan: HostPlan) -> str:
    """The repository as apt reads it, from ``nvidia_repo_base`` (a mirror works the same).

    >>> # deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] <base>/debian12/x86_64/ /
    """
    assert plan.repo is not None
    return f"deb [signed-by={KEYRING_GPG}] {plan.repo.url} /\n"


def debian_sources() -> OperationMeta | None:
    """Add the plan's components (``contrib``, ``non-free``...) to the host's Debian sources."""
    plan = host_plan(host)
    if not plan.debian_components:
        return None
    return debian_components(
        name=f"Debian sources: {' '.join(plan.debian_components)}",
        codename=plan.debian_codename, components=plan.debian_components,
    )


def nvidia_repo(wanted: tuple[str, ...] | list[str]) -> list[OperationMeta]:
    """Install ``cuda-keyring`` from ``plan.repo.keyring_url`` and point apt at ``plan.repo.url``.

    ``wanted`` are the packages the caller installs from it next: when any is missing, the
    lists are refreshed even if nothing here changed (an earlier run may have stopped between
    adding the source and ``apt-get update``). Returns the operations that change sources.

    .. code:: python

        changed = nvidia_repo(["cuda-toolkit-12-6"])
    """
    missing = missing_packages(wanted)
    run = host_run(host)
    if run.nvidia_repo_ops is not None:
        # The driver deploy set the repository up earlier in this run: refresh the lists
        # only for packages still missing (its own update covered a changed source).
        apt.update(name="apt lists for NVIDIA's repository", _if=lambda: bool(missing))
        return run.nvidia_repo_ops
    plan = host_plan(host)
    settings = host_settings(host)
    assert plan.repo is not None, "the plan has no NVIDIA repository for this host"
    ops: list[OperationMeta] = []
    run.nvidia_repo_ops = ops
    sources = debian_sources()
    if sources is not None:
        ops.append(sources)
    files.directory(name="gpulab download cache", path="/var/cache/gpulab", mode="755")
    files.download(
        name=f"cuda-keyring from {plan.repo.keyring_url}",
        src=plan.repo.keyring_url, dest=KEYRING_DEB, mode="644",
        proxy=settings.https_proxy,
    )
    ops.append(apt.deb(name="cuda-keyring (NVIDIA's signing key)", src=KEYRING_DEB))
    # cuda-keyring's own sources file names NVIDIA's host; ours names the configured base,
    # so a classroom mirror in nvidia_repo_base is what apt really uses.
    ops.append(files.put(
        name=f"NVIDIA CUDA repository {plan.repo.url}", src=StringIO(source_line(plan)),
        dest=source_path(plan), mode="644",
    ))
    apt.update(
        name="apt lists for NVIDIA's repository",
        _if=lambda: bool(missing) or any(op.did_change() for op in ops),
    )
    return ops
