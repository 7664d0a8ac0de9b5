"""apt operations gpulab needs beyond pyinfra's own: holds and Debian source components."""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.operations import files

from gpulab.apt import AptSourceFiles, HeldPackages, add_components


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
