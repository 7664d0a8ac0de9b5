"""apt on every host: the base deploy (proxy, dpkg lock, lists, tools), holds, Debian components."""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.operations import apt, files

from gpulab.deploys.common import gpulab_deploy, refused, template
from gpulab.deploys.context import host_settings
from gpulab.facts.apt import AptSourceFiles, HeldPackages
from gpulab.facts.http import HttpAnswer
from gpulab.plan.apt_sources import add_components
from gpulab.settings import ROOM_CACHE_MARKER, Settings, from_room_cache, room_cache_address

PROXY_CONF = "/etc/apt/apt.conf.d/01gpulab-proxy"
LOCK_CONF = "/etc/apt/apt.conf.d/01gpulab-lock"
BASE_PACKAGES = ["ca-certificates", "curl", "gnupg", "pciutils", "zstd"]


@operation()
def held(packages: list[str] | tuple[str, ...], present: bool = True) -> Generator[str]:
    """Hold packages so no upgrade moves them (``apt-mark hold``), or release them.

    + packages: package names
    + present: ``True`` holds, ``False`` releases

    .. code:: python

        held(name="Hold the driver", packages=["nvidia-driver-580-open"])
    """
    held_now: list[str] = host.get_fact(HeldPackages)
    on_hold = set(held_now)
    change = [p for p in packages if (p in on_hold) != present]
    if not change:
        host.noop(f"{', '.join(packages)} already {'held' if present else 'not held'}")
        return
    yield f"apt-mark {'hold' if present else 'unhold'} {' '.join(change)}"


@operation()
def debian_components(codename: str, components: list[str] | tuple[str, ...]) -> Generator[str]:
    """Add components (``contrib non-free ...``) to the host's own Debian sources.

    The host keeps its mirror; only the components of its ``codename`` entries change.

    .. code:: python

        debian_components(codename="bookworm", components=["main", "contrib", "non-free"])
    """
    changed = False
    for path, text in sorted(host.get_fact(AptSourceFiles).items()):
        new_text = add_components(text, codename, tuple(components))
        if new_text != text:
            changed = True
            yield from files.put._inner(src=StringIO(new_text), dest=path, mode="644")
    if not changed:
        host.noop(f"{' '.join(components)} already enabled for {codename}")


def room_cache_answers(settings: Settings) -> bool:
    """With a room cache, fail this host before anything changes when the cache's nginx or
    apt-cacher-ng does not answer it (the other hosts go on)."""
    cache = settings.room_cache_url
    if cache is None or settings.room_cache is None:
        return True
    address = room_cache_address(settings.room_cache)[0]
    checks: list[tuple[str, tuple[str, ...]]] = [(cache + ROOM_CACHE_MARKER, ("200",))]
    if from_room_cache(settings, "apt_proxy") and settings.apt_proxy:
        checks.append((settings.apt_proxy + "/", ()))
    for url, wanted in checks:
        answer = host.get_fact(HttpAnswer, url=url)
        if answer is None:  # no curl yet: apt's own error names the proxy
            continue
        if answer.startswith("curl") or (wanted and answer not in wanted):
            refused(name=f"room cache {address} answers", reason=(
                f"room cache {address}: {url} answers {answer}; start the cache (pyinfra "
                "INVENTORY deploy/room_cache.py --limit room_cache) or remove room_cache from "
                "this host's data. Nothing was changed on this host"))
            return False
    return True


@gpulab_deploy("gpulab apt base")
def apt_base() -> None:
    """Point apt at the proxy (if any), wait for the dpkg lock, update lists, add base tools."""
    settings = host_settings(host)
    if not room_cache_answers(settings):
        return
    if settings.apt_proxy or settings.https_proxy:
        files.template(
            name="apt proxy", src=template("apt/gpulab-proxy.conf.j2"), dest=PROXY_CONF,
            http_proxy=settings.apt_proxy, https_proxy=settings.https_proxy, mode="644",
        )
    else:
        files.file(name="no apt proxy", path=PROXY_CONF, present=False)
    files.template(
        name="apt waits for the dpkg lock", src=template("apt/gpulab-lock.conf.j2"),
        dest=LOCK_CONF, timeout=settings.apt_lock_timeout, mode="644",
    )
    apt.update(name="apt lists", cache_time=settings.apt_cache_time)
    apt.packages(name="base tools", packages=BASE_PACKAGES, no_recommends=True)
