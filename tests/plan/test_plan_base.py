"""The apt base deploy, planned against recorded facts of every platform."""

from __future__ import annotations

import pytest

from gpulab.deploys.apt import LOCK_CONF, apt_base
from gpulab.deploys.context import GpulabDataError
from tests.plan.harness import plan_deploy

pytestmark = pytest.mark.plan

PLATFORMS = [
    "ubuntu2204-rtx3070.json", "ubuntu2404-rtx5090.json", "wsl2-566.json",
    "debian12-gtx1650.json", "debian12-nogpu.json",
]


@pytest.mark.parametrize("facts", PLATFORMS)
def test_base_on_every_platform(facts: str) -> None:
    planned = plan_deploy(apt_base, facts)
    assert planned.op("no apt proxy").commands == ()  # nothing to remove on a fresh host
    lock = planned.op("dpkg lock").text
    assert f"upload {LOCK_CONF}" in lock and 'DPkg::Lock::Timeout "600";' in lock
    assert planned.op("apt lists").commands[0] == "apt-get update"
    assert "install --no-install-recommends ca-certificates curl gnupg pciutils zstd" in (
        planned.op("base tools").text
    )


def test_proxy_and_lock_timeout_from_data() -> None:
    planned = plan_deploy(apt_base, "debian12-nogpu.json", {
        "apt_proxy": "http://10.0.0.5:3142", "apt_lock_timeout": 30,
    })
    proxy = planned.op("apt proxy").text
    assert 'Acquire::http::Proxy "http://10.0.0.5:3142";' in proxy
    assert "https::Proxy" not in proxy  # an apt-cacher-ng cannot proxy HTTPS repositories
    assert 'DPkg::Lock::Timeout "30";' in planned.op("dpkg lock").text


def test_bad_data_stops_before_any_operation() -> None:
    with pytest.raises(GpulabDataError, match=r"apt_proxy: '10\.0\.0\.5:3142' is not an http"):
        plan_deploy(apt_base, "debian12-nogpu.json", {"apt_proxy": "10.0.0.5:3142"})


def test_https_proxy_reaches_apts_https_sources() -> None:
    planned = plan_deploy(apt_base, "ubuntu2204-rtx3070.json", {
        "apt_proxy": "http://10.0.0.5:3142", "https_proxy": "http://10.0.0.6:3128",
    })
    proxy = planned.op("apt proxy").text
    assert 'Acquire::http::Proxy "http://10.0.0.5:3142";' in proxy
    assert 'Acquire::https::Proxy "http://10.0.0.6:3128";' in proxy
    only_https = plan_deploy(apt_base, "ubuntu2204-rtx3070.json", {
        "https_proxy": "http://10.0.0.6:3128",
    }).op("apt proxy").text
    assert "Acquire::http::Proxy" not in only_https
