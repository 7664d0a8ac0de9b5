"""The apt base every host gets: proxy, waiting on the dpkg lock, fresh lists, base tools."""

from __future__ import annotations

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import apt, files

from gpulab.deploys.context import host_settings, template

PROXY_CONF = "/etc/apt/apt.conf.d/01gpulab-proxy"
LOCK_CONF = "/etc/apt/apt.conf.d/01gpulab-lock"
BASE_PACKAGES = ["ca-certificates", "curl", "gnupg", "pciutils", "zstd"]


@deploy("gpulab apt base")
def apt_base() -> None:
    """Point apt at the proxy (if any), wait for the dpkg lock, update lists, add base tools."""
    settings = host_settings(host)
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
