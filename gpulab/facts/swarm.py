"""What the swarm distribution reads on a host: its addresses, and what a swarm left running."""

from __future__ import annotations

from pyinfra.api.facts import FactBase

from gpulab.models.swarm import TABLE, UNIT


class HostAddresses(FactBase[list[str]]):
    """Every address of the host's interfaces (``hostname -I``), the room's among them.

    Output and value::

        10.0.2.15 10.77.0.2 fec0::5054:ff:fe12:3456
        -> ["10.0.2.15", "10.77.0.2", "fec0::5054:ff:fe12:3456"]
    """

    def command(self) -> str:
        return "hostname -I"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return " ".join(output).split()


class SwarmLeftovers(FactBase[list[str]]):
    """What a swarm left on the host: its aria2 unit still loaded, its firewall table.

    Output and value::

        unit
        table
        -> ["unit", "table"]
    """

    def command(self) -> str:
        return (f"systemctl list-units --all --plain --no-legend {UNIT}.service | "
                f"grep -q . && echo unit; nft list table inet {TABLE} >/dev/null 2>&1 "
                "&& echo table; true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip() in ("unit", "table")]
