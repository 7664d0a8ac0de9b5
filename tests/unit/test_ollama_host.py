"""OLLAMA_HOST read the way ``ollama serve`` reads it, so firewall and plan match the socket.

Cases follow ``TestHost`` in github:ollama/ollama ``envconfig/config_test.go``.
"""

from __future__ import annotations

import pytest

from gpulab.facts.model import HostFacts, OsInfo
from gpulab.plan.host import make_plan
from gpulab.settings import SettingsError, ollama_listen_address, parse_settings

pytestmark = pytest.mark.unit

NOBLE = HostFacts(hostname="pc-1", os=OsInfo(id="ubuntu", version_id="24.04", codename="noble"),
                  kernel="6.8.0-90-generic")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("127.0.0.1", 11434)),
        ("1.2.3.4", ("1.2.3.4", 11434)),
        (":1234", ("0.0.0.0", 1234)),
        ("1.2.3.4:1234", ("1.2.3.4", 1234)),
        ("example.com", ("example.com", 11434)),
        ("[::1]", ("::1", 11434)),
        ("[::]", ("::", 11434)),
        ("::1", ("::1", 11434)),
        ("[::1]:1337", ("::1", 1337)),
        (" 1.2.3.4 ", ("1.2.3.4", 11434)),
        ("'1.2.3.4'", ("1.2.3.4", 11434)),
        ("http://1.2.3.4", ("1.2.3.4", 80)),
        ("http://1.2.3.4:4321", ("1.2.3.4", 4321)),
        ("https://1.2.3.4", ("1.2.3.4", 443)),
        ("https://example.com/ollama", ("example.com", 443)),
        ("http://0.0.0.0", ("0.0.0.0", 80)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
    ],
)
def test_listen_address_follows_ollamas_envconfig(value: str, expected: tuple[str, int]) -> None:
    assert ollama_listen_address(value) == expected


@pytest.mark.parametrize("value", [":66000", "0.0.0.0:x", "1:2:zz"])
def test_unusable_listen_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=repr(value)):
        ollama_listen_address(value)


def test_empty_host_listens_everywhere_so_it_needs_allowed_clients() -> None:
    with pytest.raises(SettingsError, match="ollama_allowed_clients"):
        parse_settings("pc-1", {"ollama_host": ":11434"})


def test_scheme_without_port_is_firewalled_on_ollamas_port_80() -> None:
    settings = parse_settings("pc-1", {"ollama_host": "http://0.0.0.0",
                                       "ollama_allowed_clients": ["10.0.0.0/24"]})
    plan = make_plan("pc-1", NOBLE, settings)
    assert (plan.ollama.listen_host, plan.ollama.listen_port) == ("0.0.0.0", 80)
    assert plan.ollama.exposed
    assert "0.0.0.0:80" in plan.ollama.reason
