"""apt state: held and upgradable packages, and the host's source files."""

from __future__ import annotations

from pyinfra.api.facts import FactBase

SOURCE_FILES = (
    "/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources"
)
_FILE_MARK = "==> "


class HeldPackages(FactBase[list[str]]):
    """Packages on hold (``apt-mark showhold``).

    .. code:: python

        ["nvidia-driver", "nvidia-kernel-dkms"]
    """

    def command(self) -> str:
        return "apt-mark showhold"

    def requires_command(self) -> str:
        return "apt-mark"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class UpgradablePackages(FactBase[list[str]]):
    """Packages with a newer candidate (``apt list --upgradable``), held ones included.

    .. code:: python

        ["cuda-drivers-580", "nvidia-driver"]
    """

    def command(self) -> str:
        return "apt list --upgradable 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted({line.split("/", 1)[0] for line in output if "/" in line})

    @staticmethod
    def default() -> list[str]:
        return []


class AptSourceFiles(FactBase[dict[str, str]]):
    """The text of every apt source file, by path (``sources.list`` and ``sources.list.d``).

    .. code:: python

        {"/etc/apt/sources.list.d/debian.sources": "Types: deb\\nURIs: ...\\n"}
    """

    def command(self) -> str:
        return (
            f"for f in {SOURCE_FILES}; do [ -f \"$f\" ] && "
            f"{{ echo '{_FILE_MARK}'\"$f\"; cat \"$f\"; echo; }}; done; true"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        files: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output:
            if line.startswith(_FILE_MARK):
                current = files.setdefault(line[len(_FILE_MARK):], [])
            elif current is not None:
                current.append(line)
        return {path: "\n".join(lines).rstrip("\n") + "\n" for path, lines in files.items()}

