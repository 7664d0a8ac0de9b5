"""Ollama as a pinned, checksummed, loopback-only systemd service (or removed again).

Never runs Ollama's install.sh (it installs an unpinned ``cuda-drivers`` on GPU hosts without
a working ``nvidia-smi``). Instead: the pinned release archive, downloaded resumably and
verified, unpacked into ``/opt/ollama/<version>/``, switched in by two symlinks; the unit and
a drop-in rendered from ``templates/ollama/``; a firewall table when it listens on the LAN.
The service is restarted only when the binary, the unit, the drop-in or the driver changed.

    from gpulab.deploys.ollama import ollama
    ollama()
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Generator
from io import StringIO

from pyinfra import logger
from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import host
from pyinfra.facts.files import Directory, FileContents
from pyinfra.facts.server import Arch, Groups
from pyinfra.operations import apt, files, server, systemd

from gpulab.deploys.common import changed, gpulab_deploy, refused, template
from gpulab.deploys.context import host_facts, host_plan, host_run, host_settings
from gpulab.facts.files import FileText, LinkTarget
from gpulab.facts.ollama import ActiveFirewalls, NftTable, OllamaVersionDirs, UfwAddedRules
from gpulab.plan import ollama as lib
from gpulab.plan.host import HostPlan
from gpulab.settings import Settings

_JINJA = {"trim_blocks": True, "lstrip_blocks": True}
NFT = "/usr/sbin/nft"


@operation()
def release_unpacked(
    version: str,
    machine: str,
    base: str,
    sha256: str | None = None,
    https_proxy: str | None = None,
    no_proxy: list[str] | tuple[str, ...] = (),
) -> Generator[str]:
    """Ollama ``version`` downloaded, verified and unpacked into ``/opt/ollama/<version>/``.

    An existing complete directory of that version is not downloaded again (the check reads
    its marker, not the network); with a known ``sha256`` the marker must also match it.

    .. code:: python

        release_unpacked(name="Ollama 0.34.2", version="0.34.2", machine="x86_64",
                         base="https://github.com/ollama/ollama/releases/download")
    """
    have = host.get_fact(FileText, path=f"{lib.OPT_DIR}/{version}/{lib.MARKER}")
    if have and (sha256 is None or have == sha256):
        host.noop(f"Ollama {version} is already in {lib.OPT_DIR}/{version}")
        return
    yield lib.fetch_script(version, machine, base, sha256, https_proxy, tuple(no_proxy))


@operation()
def symlink_switched(path: str, target: str) -> Generator[str]:
    """Symlink ``path`` points at ``target``, replaced atomically (``ln -sfn`` + ``mv -T``).

    .. code:: python

        symlink_switched(path="/usr/local/bin/ollama", target="/opt/ollama/0.34.2/bin/ollama")
    """
    if host.get_fact(LinkTarget, path=path) == target:
        host.noop(f"{path} already points at {target}")
        return
    yield lib.switch_link_script(path, target)


@operation()
def traversable_dirs(path: str, owner: str, owned_below: str) -> Generator[str]:
    """``path`` and every parent exist and can be traversed by the service user.

    Parents at or below ``owned_below`` (the service's home) are created owned by ``owner``;
    other parents are only made world-searchable (``o+x``), never re-owned (a models directory
    under ``/srv/data`` must not change who owns ``/srv``).

    .. code:: python

        traversable_dirs(path="/srv/ollama/models", owner="ollama", owned_below="/usr/share/ollama")
    """
    parts = [p for p in path.split("/") if p]
    chain = ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    for directory in chain:
        info = host.get_fact(Directory, path=directory)
        owned = directory == owned_below or directory.startswith(owned_below.rstrip("/") + "/")
        if directory == path or owned:
            if not info or info.get("user") != owner or info.get("group") != owner:
                yield f"install -d -o {owner} -g {owner} -m 755 {shlex.quote(directory)}"
            continue
        if not info:
            yield f"install -d -m 755 {shlex.quote(directory)}"
        elif not int(str(info.get("mode", 0)), 8) & 0o001:
            yield f"chmod o+x {shlex.quote(directory)}"


def _wsl_systemd(plan: HostPlan) -> None:
    """WSL2 without systemd: turn it on in /etc/wsl.conf; the user restarts WSL."""
    current = host.get_fact(FileContents, path=lib.WSL_CONF)
    text = "\n".join(current) + "\n" if current else None
    wanted = lib.wsl_conf_with_systemd(text)
    if text != wanted:
        files.put(
            name="WSL2: systemd=true in /etc/wsl.conf (then run `wsl --shutdown` in Windows "
            "and gpulab again)",
            src=StringIO(wanted), dest=lib.WSL_CONF, mode="644",
        )
    logger.warning(
        f"{host.name}: {plan.ollama.reason}. Ollama is installed but not started."
    )


@operation()
def ufw_allowed(rules: lib.FirewallRules | None) -> Generator[str]:
    """ufw lets exactly ``rules``' networks reach Ollama's port (None: gpulab's ufw rules go).

    An active ufw drops what gpulab's nftables table accepts, so the allowed networks are
    opened through ufw too. Rules are tagged with a comment; the user's own are left alone.

    .. code:: python

        ufw_allowed(name="ufw: Ollama's port", rules=firewall_rules(11434, ["10.0.0.0/24"]))
    """
    changes = lib.ufw_changes(host.get_fact(UfwAddedRules), rules)
    if not changes:
        host.noop("ufw already has gpulab's rules for Ollama")
        return
    for args in changes:
        yield "ufw " + shlex.join(args)


def _other_firewalls(plan: HostPlan) -> bool:
    """False (the host is refused) where Ollama's LAN port cannot be opened for sure."""
    active = host.get_fact(ActiveFirewalls)
    exposed = plan.ollama.state == "present" and plan.ollama.exposed
    if exposed and "firewalld" in active:
        refused(
            name="Ollama on the LAN: firewalld is active",
            reason=("firewalld is active and would drop what gpulab's nftables table allows "
                    f"to port {plan.ollama.listen_port}; open it to "
                    f"{', '.join(plan.ollama.allowed_clients)} in firewalld (firewall-cmd "
                    "--permanent --add-rich-rule ...) and run gpulab again, or stop firewalld; "
                    "nothing was changed"),
        )
        return False
    rules = (lib.firewall_rules(plan.ollama.listen_port, plan.ollama.allowed_clients)
             if exposed else None)
    if "ufw" in active or rules is None:
        ufw_allowed(name=f"ufw: port {plan.ollama.listen_port} for the allowed clients",
                    rules=rules if "ufw" in active else None)
    return True


def _firewall(settings: Settings, plan: HostPlan, can_run: bool) -> list[OperationMeta]:
    """The nftables table that limits Ollama's port to the allowed clients, or its removal."""
    if plan.ollama.state == "present" and plan.ollama.exposed:
        rules = lib.firewall_rules(plan.ollama.listen_port, plan.ollama.allowed_clients)
        files.directory(name="gpulab config directory", path="/etc/gpulab", mode="755")
        rules_op = files.template(
            name="Ollama firewall rules", src=template("ollama/ollama.nft.j2"),
            dest=lib.FIREWALL_RULES, mode="644", rules=rules, table=lib.FIREWALL_TABLE,
            jinja_env_kwargs=dict(_JINJA),
        )
        unit_op = files.template(
            name="Ollama firewall unit", src=template("ollama/gpulab-ollama-firewall.service.j2"),
            dest=lib.FIREWALL_UNIT_PATH, mode="644", nft=NFT, rules_path=lib.FIREWALL_RULES,
            table=lib.FIREWALL_TABLE, jinja_env_kwargs=dict(_JINJA),
        )
        files.directory(name="nftables drop-in directory",
                        path=posixpath.dirname(lib.NFTABLES_DROPIN_PATH), mode="755")
        dropin_op = files.template(
            name="nftables reloads Ollama's firewall when it starts",
            src=template("ollama/nftables-gpulab-ollama.conf.j2"),
            dest=lib.NFTABLES_DROPIN_PATH, mode="644", nft=NFT, rules_path=lib.FIREWALL_RULES,
            table=lib.FIREWALL_TABLE, firewall_unit=lib.FIREWALL_UNIT,
            jinja_env_kwargs=dict(_JINJA),
        )
        files_changed = changed(rules_op, unit_op, dropin_op)
        if can_run:
            systemd.service(
                name="Ollama firewall (re)loaded", service=lib.FIREWALL_UNIT, running=True,
                restarted=True, daemon_reload=True, _if=files_changed,
            )
            systemd.service(
                name="Ollama firewall enabled", service=lib.FIREWALL_UNIT, running=True,
                enabled=True,
            )
            live = host.get_fact(NftTable, family="inet", table=lib.FIREWALL_TABLE)
            if not lib.live_table_matches(live, rules):
                systemd.service(
                    name="Ollama firewall restored (its table was missing from the live "
                    "ruleset)", service=lib.FIREWALL_UNIT, running=True, reloaded=True,
                    _if=lambda: not files_changed(),
                )
        return [rules_op, unit_op]
    if can_run:
        systemd.service(
            name="Ollama firewall stopped", service=lib.FIREWALL_UNIT, running=False,
            enabled=False,
        )
    unit_op = files.file(name="no Ollama firewall unit", path=lib.FIREWALL_UNIT_PATH,
                         present=False)
    rules_op = files.file(name="no Ollama firewall rules", path=lib.FIREWALL_RULES,
                          present=False)
    dropin_op = files.file(name="no nftables drop-in for Ollama's firewall",
                           path=lib.NFTABLES_DROPIN_PATH, present=False)
    if can_run:
        server.shell(
            name="no Ollama firewall table",
            commands=[f"nft delete table inet {lib.FIREWALL_TABLE} 2>/dev/null || true",
                      "systemctl daemon-reload"],
            _if=changed(unit_op, rules_op, dropin_op),
        )
    return [unit_op, rules_op]


def _present(settings: Settings, plan: HostPlan, machine: str) -> None:
    if not _other_firewalls(plan):
        return
    can_run = plan.ollama.service_can_run
    version = plan.ollama.version
    if plan.platform.startswith("wsl2") and not can_run:
        _wsl_systemd(plan)
    packages = ["ca-certificates", "curl"]
    if lib.is_zstd(version):
        packages.append("zstd")
    if plan.ollama.exposed:
        packages.append("nftables")
    apt.packages(
        name="Ollama's tools", packages=packages, no_recommends=True, update=True,
        cache_time=settings.apt_cache_time,
    )

    server.group(name="ollama group", group=lib.USER, system=True)
    existing = host.get_fact(Groups) or []
    server.user(
        name="ollama user", user=lib.USER, system=True, home=lib.HOME, shell="/bin/false",
        group=lib.USER, groups=[g for g in lib.GPU_GROUPS if g in existing], append=True,
        create_home=True,
    )
    traversable_dirs(
        name="Ollama models directory", path=settings.ollama_models_dir, owner=lib.USER,
        owned_below=lib.HOME,
    )

    sha256 = lib.known_sha256(version, machine, settings.ollama_sha256)
    url = lib.archive_url(settings.ollama_download_base, version, machine)
    release_op = release_unpacked(
        name=f"Ollama {version} ({url})",
        version=version, machine=machine, base=settings.ollama_download_base, sha256=sha256,
        https_proxy=settings.https_proxy, no_proxy=settings.no_proxy,
    )
    version_dir = f"{lib.OPT_DIR}/{version}"
    lib_op = symlink_switched(
        name=f"{lib.LIB_LINK} -> {version_dir}/lib/ollama", path=lib.LIB_LINK,
        target=f"{version_dir}/lib/ollama",
    )
    bin_op = symlink_switched(
        name=f"{lib.BIN_LINK} -> {version_dir}/bin/ollama", path=lib.BIN_LINK,
        target=f"{version_dir}/bin/ollama",
    )

    unit_op = files.template(
        name="Ollama unit", src=template("ollama/ollama.service.j2"), dest=lib.UNIT_PATH,
        mode="644", version=version, bin_link=lib.BIN_LINK, service_user=lib.USER,
        after_nvidia=plan.ollama.after_nvidia, exposed=plan.ollama.exposed,
        firewall_unit=lib.FIREWALL_UNIT, jinja_env_kwargs=dict(_JINJA),
    )
    files.directory(name="Ollama drop-in directory", path=lib.DROPIN_DIR, mode="755")
    environment = [lib.systemd_quote(k, v) for k, v in lib.service_environment(settings)]
    dropin_op = files.template(
        name="Ollama settings drop-in", src=template("ollama/gpulab.conf.j2"),
        dest=lib.DROPIN_PATH, mode="644", environment=environment,
        privileged_port=plan.ollama.listen_port < 1024, jinja_env_kwargs=dict(_JINJA),
    )
    firewall_ops = _firewall(settings, plan, can_run)
    _old_versions_removed(version)

    if not can_run:
        return
    # Ollama finds GPUs once per process: restart it when this run changed the driver too.
    restart = changed(
        release_op, lib_op, bin_op, unit_op, dropin_op, *firewall_ops, *host_run(host).driver_ops
    )
    systemd.service(
        name="Ollama restarted (binary, configuration or driver changed)",
        service="ollama.service", running=True, restarted=True, daemon_reload=True,
        _if=restart,
    )
    systemd.service(
        name="Ollama running and enabled", service="ollama.service", running=True,
        enabled=True,
    )


def _old_versions_removed(version: str) -> None:
    """Keep this version and the one before it; older trees hold GBs of GPU libraries each."""
    linked_before = lib.version_in_link(host.get_fact(LinkTarget, path=lib.BIN_LINK))
    installed = host.get_fact(OllamaVersionDirs)
    for old in lib.versions_to_remove(installed, version, linked_before):
        files.directory(name=f"old Ollama {old} removed", path=f"{lib.OPT_DIR}/{old}",
                        present=False)


def _absent(settings: Settings, plan: HostPlan) -> None:
    can_run = plan.ollama.service_can_run
    if can_run:
        systemd.service(name="Ollama stopped", service="ollama.service", running=False,
                        enabled=False)
    unit_op = files.file(name=f"no {lib.UNIT_PATH}", path=lib.UNIT_PATH, present=False)
    dropin_op = files.file(name=f"no {lib.DROPIN_PATH}", path=lib.DROPIN_PATH, present=False)
    _other_firewalls(plan)
    _firewall(settings, plan, can_run)
    if can_run:
        systemd.daemon_reload(name="systemd reloaded", _if=changed(unit_op, dropin_op))
    files.link(name=f"no {lib.BIN_LINK}", path=lib.BIN_LINK, present=False)
    files.link(name=f"no {lib.LIB_LINK}", path=lib.LIB_LINK, present=False)
    files.directory(name=f"no {lib.OPT_DIR}", path=lib.OPT_DIR, present=False)
    files.directory(name=f"no {lib.CACHE_DIR}", path=lib.CACHE_DIR, present=False)
    server.user(name="no ollama user", user=lib.USER, present=False)
    server.group(name="no ollama group", group=lib.USER, present=False)
    if settings.ollama_remove_models:
        files.directory(name="Ollama models removed", path=settings.ollama_models_dir,
                        present=False)
        if posixpath.commonpath([settings.ollama_models_dir, lib.HOME]) == lib.HOME:
            files.directory(name="Ollama home removed", path=lib.HOME, present=False)


@gpulab_deploy("gpulab Ollama")
def ollama() -> None:
    """Ollama per the host's plan: installed, configured and running, or removed."""
    settings = host_settings(host)
    plan = host_plan(host)
    if plan.ollama.state == "absent":
        _absent(settings, plan)
        return
    # uname -m from the host; a recorded-facts dry run (@fake host) has it in its facts file.
    machine = host.get_fact(Arch) or host_facts(host).arch
    _present(settings, plan, machine)
