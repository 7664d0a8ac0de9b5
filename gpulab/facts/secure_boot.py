"""Secure Boot, from ``mokutil`` or the EFI variables."""

from __future__ import annotations

from typing import Literal

from pyinfra.api.facts import FactBase

SecureBootState = Literal["enabled", "disabled", "unsupported"]

# Markers our own commands print; they cannot be confused with the tools' output.
_EFIVAR = "gpulab-efivar"
def parse_secure_boot(text: str) -> SecureBootState:
    """``mokutil --sb-state`` (or our efivars fallback lines) -> enabled/disabled/unsupported.

    "SecureBoot validation is disabled in shim" reads as disabled: the kernel then honours shim's
    MokSBStateRT, turns lockdown off and loads unsigned (DKMS) modules, which is what the plan
    cares about.  No EFI, or a firmware without the variable, is ``unsupported``.  Example::

        >>> parse_secure_boot("SecureBoot enabled")
        'enabled'
        >>> parse_secure_boot("EFI variables are not supported on this system")
        'unsupported'
    """
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if any(line.startswith(_EFIVAR) for line in lines):
        values: dict[str, str] = {}
        for line in lines:
            if line.startswith(_EFIVAR):
                key, _, value = line.removeprefix(_EFIVAR).strip().partition("=")
                values[key] = value
        if values.get("securebootstate") != "1":
            return "disabled" if values.get("securebootstate") == "0" else "unsupported"
        return "disabled" if values.get("moksbstatert") == "1" else "enabled"
    if any("validation is disabled in shim" in line for line in lines):
        return "disabled"
    if "secureboot enabled" in lines:
        return "enabled"
    if "secureboot disabled" in lines:
        return "disabled"
    return "unsupported"


_EFIVARS = "/sys/firmware/efi/efivars"
# EFI global-variable GUID (SecureBoot) and shim's GUID (MokSBStateRT).
_SB_VAR = f"{_EFIVARS}/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
_MOK_SB_VAR = f"{_EFIVARS}/MokSBStateRT-605dab50-e046-4300-abb6-3dd810dd8b23"


class SecureBoot(FactBase[SecureBootState]):
    """Secure Boot state: ``enabled``, ``disabled`` or ``unsupported`` (BIOS boot, VM, WSL).

    Runs ``mokutil --sb-state``; without mokutil it reads the EFI variables (byte 5 of an efivarfs
    file is the value; the first four are attributes).  Output and value::

        SecureBoot enabled
        -> "enabled"

        EFI variables are not supported on this system
        -> "unsupported"
    """

    def command(self) -> str:
        return (
            "if command -v mokutil >/dev/null 2>&1; then mokutil --sb-state 2>&1 || true; "
            f"elif [ -r {_SB_VAR} ]; then "
            f'echo "{_EFIVAR} SecureBootState=$(od -An -t u1 -j4 -N1 {_SB_VAR} | tr -d " ")"; '
            f"if [ -r {_MOK_SB_VAR} ]; then "
            f'echo "{_EFIVAR} MokSBStateRT=$(od -An -t u1 -j4 -N1 {_MOK_SB_VAR} | tr -d " ")"; fi; '
            f'else echo "{_EFIVAR} SecureBootState=absent"; fi'
        )

    @staticmethod
    def default() -> SecureBootState:
        return "unsupported"

    def process(self, output: list[str]) -> SecureBootState:
        return parse_secure_boot("\n".join(output))

