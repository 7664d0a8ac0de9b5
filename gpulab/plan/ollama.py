"""Pure Ollama decisions: release asset names, URLs, checksums, service environment, firewall.

No pyinfra, no I/O: ``gpulab.deploys.ollama`` turns these values into operations, and the unit
tests check them directly.

    >>> archive_name("0.34.2", "x86_64")
    'ollama-linux-amd64.tar.zst'
    >>> archive_url("https://example.test/dl", "0.13.5", "aarch64")
    'https://example.test/dl/v0.13.5/ollama-linux-arm64.tgz'
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from gpulab.settings import Settings

# Where gpulab puts things on a host. One directory per version, so an upgrade unpacks next to
# the running one and a failed download never touches it; the two links are what switches.
OPT_DIR = "/opt/ollama"
CACHE_DIR = "/var/cache/gpulab/ollama"
BIN_LINK = "/usr/local/bin/ollama"
LIB_LINK = "/usr/local/lib/ollama"
MARKER = ".gpulab-sha256"  # written last into a versioned dir: "this unpack is complete"
UNIT_PATH = "/etc/systemd/system/ollama.service"
DROPIN_DIR = "/etc/systemd/system/ollama.service.d"
DROPIN_PATH = f"{DROPIN_DIR}/gpulab.conf"
FIREWALL_TABLE = "gpulab_ollama"
FIREWALL_RULES = "/etc/gpulab/ollama.nft"
FIREWALL_UNIT = "gpulab-ollama-firewall.service"
FIREWALL_UNIT_PATH = f"/etc/systemd/system/{FIREWALL_UNIT}"
NFTABLES_DROPIN_PATH = "/etc/systemd/system/nftables.service.d/gpulab-ollama.conf"
UFW_COMMENT = "gpulab-ollama"  # marks the ufw rules gpulab owns
USER = "ollama"
HOME = "/usr/share/ollama"
GPU_GROUPS = ("render", "video")  # joined only where they exist, as install.sh does
WSL_CONF = "/etc/wsl.conf"

# install.sh's mapping (ollama.md §1.1); any other machine is not released.
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

# sha256 of release archives, (version, arch) -> hex. Each value comes from a public packaging
# file that pins the same GitHub asset URL; a version missing here is verified against the
# release's own sha256sum.txt from the same download base (and ``ollama_sha256`` overrides
# both). Sources, all pinning https://github.com/ollama/ollama/releases/download/v<ver>/<asset>:
KNOWN_SHA256: dict[tuple[str, str], str] = {
    # 0.34.2 (gpulab's default): a Homebrew formula and a Homebrew cask (x86_64_linux and
    # arm64_linux) pinning v0.34.2's assets; the amd64 value also appears in at least eight
    # other independent public files, one recording it as the GitHub release digest of tag
    # v0.34.2's ollama-linux-amd64.tar.zst (1,427,542,079 bytes).
    ("0.34.2", "amd64"): "e155b83589986d2c581fdbf1381ea3ebdb16549883679cd5a0627f7cdc05b12b",
    ("0.34.2", "arm64"): "8edcfe99eb7546d9422cfa8297d341dcd50e090e192ce1a8092a6ab6d182867b",
    # 0.32.9: a Homebrew-style binary formula, version "0.32.9", on_linux urls.
    ("0.32.9", "amd64"): "5d747a43369f61e38f20b5a39fcc5c90647e562cdc61e2e56034f1c5b113d540",
    ("0.32.9", "arm64"): "79617139521db251c716d6229505d7530171ff4d68e476d0c22dabc15726a237",
    # 0.32.7: chromebrew/chromebrew packages/ollama.rb (commit 80b2c3b4), source_sha256.
    ("0.32.7", "amd64"): "ed1e39fe8fea90bd7f4c723bd949a2cea3153e111220ec0a183ea5b8dc8b2cae",
    # 0.12.10 and 0.12.6 (.tgz era): a Spack `class Ollama(Package)` version() table.
    ("0.12.10", "amd64"): "8f4bf70a9856a34ba71355745c2189a472e2691a020ebd2e242a58e4d2094722",
    ("0.12.6", "amd64"): "de82adce2ab79235115d511ff22fcb099ac53b67127870f12b80198c033ec0a1",
}

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class OllamaError(ValueError):
    """A value gpulab cannot build an Ollama install from."""


def release_arch(machine: str) -> str:
    """``uname -m`` -> the release's arch word: ``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``.

    >>> release_arch("aarch64")
    'arm64'
    """
    try:
        return ARCHES[machine]
    except KeyError:
        raise OllamaError(f"Ollama publishes no Linux release for {machine!r}") from None


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"0.33.0-rc2"`` -> ``(0, 33, 0)``."""
    match = _VERSION.match(version)
    if match is None:
        raise OllamaError(f"{version!r} is not an Ollama release number")
    return int(match[1]), int(match[2]), int(match[3])


def is_zstd(version: str) -> bool:
    """Releases from 0.14.0 ship ``.tar.zst`` (commit 34d0c55e); 0.3.7 to 0.13.x ``.tgz``.

    >>> is_zstd("0.14.0"), is_zstd("0.13.5")
    (True, False)
    """
    return version_tuple(version) >= (0, 14, 0)


def archive_name(version: str, machine: str) -> str:
    """The release asset for this version and machine, e.g. ``ollama-linux-amd64.tar.zst``."""
    if version_tuple(version) < (0, 3, 7):
        raise OllamaError(f"Ollama {version} predates the bin/ + lib/ archives (0.3.7)")
    ext = ".tar.zst" if is_zstd(version) else ".tgz"
    return f"ollama-linux-{release_arch(machine)}{ext}"


def archive_url(base: str, version: str, machine: str) -> str:
    """``<base>/v<version>/<asset>``: GitHub's release layout, which a lab mirror copies."""
    return f"{base.rstrip('/')}/v{version}/{archive_name(version, machine)}"


def checksums_url(base: str, version: str) -> str:
    """The release's ``sha256sum.txt`` next to its archives."""
    return f"{base.rstrip('/')}/v{version}/sha256sum.txt"


def known_sha256(version: str, machine: str, override: str | None = None) -> str | None:
    """The sha256 to verify against: the setting, else gpulab's table, else None.

    None means "take it from the release's sha256sum.txt".

    >>> known_sha256("0.34.2", "x86_64")[:8]
    'e155b835'
    >>> known_sha256("0.0.1-never", "x86_64") is None
    True
    """
    if override:
        return override.lower()
    return KNOWN_SHA256.get((version, release_arch(machine)))


def parse_sha256sum(text: str, name: str) -> str | None:
    """The hash ``sha256sum.txt`` lists for asset ``name`` (``./name``, ``*name`` or ``name``).

    >>> parse_sha256sum("aa  ./other\\n" + "b" * 64 + "  ./ollama-linux-amd64.tgz\\n",
    ...                 "ollama-linux-amd64.tgz") == "b" * 64
    True
    """
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not _HEX64.match(parts[0]):
            continue
        listed = parts[1].removeprefix("*").removeprefix("./")
        if listed == name:
            return parts[0].lower()
    return None


def service_environment(settings: Settings) -> list[tuple[str, str]]:
    """The drop-in's ``Environment=`` pairs, in a fixed order so the file is stable.

    Only ``HTTPS_PROXY``/``NO_PROXY`` are passed: Ollama's client also reads ``HTTP_PROXY`` and
    would send its own loopback API calls through it (ollama.md §6).

    >>> dict(service_environment(Settings()))["OLLAMA_HOST"]
    '127.0.0.1:11434'
    """
    env = [
        ("OLLAMA_HOST", settings.ollama_host),
        ("OLLAMA_MODELS", settings.ollama_models_dir),
        ("OLLAMA_KEEP_ALIVE", settings.ollama_keep_alive),
    ]
    if settings.ollama_num_parallel is not None:
        env.append(("OLLAMA_NUM_PARALLEL", str(settings.ollama_num_parallel)))
    if settings.ollama_max_loaded_models is not None:
        env.append(("OLLAMA_MAX_LOADED_MODELS", str(settings.ollama_max_loaded_models)))
    if settings.ollama_flash_attention is not None:
        env.append(("OLLAMA_FLASH_ATTENTION", "1" if settings.ollama_flash_attention else "0"))
    if settings.ollama_kv_cache_type is not None:
        env.append(("OLLAMA_KV_CACHE_TYPE", settings.ollama_kv_cache_type))
    return env + proxy_environment(settings)


def proxy_environment(settings: Settings) -> list[tuple[str, str]]:
    """``HTTPS_PROXY`` and ``NO_PROXY`` for a service's downloads; loopback always bypasses."""
    if settings.https_proxy:
        no_proxy = ["localhost", "127.0.0.1", "::1", *settings.no_proxy]
        return [("HTTPS_PROXY", settings.https_proxy),
                ("NO_PROXY", ",".join(dict.fromkeys(no_proxy)))]
    if settings.no_proxy:
        return [("NO_PROXY", ",".join(settings.no_proxy))]
    return []


def systemd_quote(name: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted for systemd.

    >>> systemd_quote("OLLAMA_HOST", "0.0.0.0:11434")
    '"OLLAMA_HOST=0.0.0.0:11434"'
    """
    text = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{text}"'


@dataclass(frozen=True)
class FirewallRules:
    """Who may reach Ollama's port: IPv4 and IPv6 networks, loopback always."""

    port: int
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def firewall_rules(port: int, allowed_clients: tuple[str, ...] | list[str]) -> FirewallRules:
    """Split the allowed CIDRs by family (nftables matches ``ip`` and ``ip6`` separately).

    >>> firewall_rules(11434, ["10.0.0.0/24", "fd00::/8"]).ipv6
    ('fd00::/8',)
    """
    ipv4: list[str] = []
    ipv6: list[str] = []
    for text in allowed_clients:
        network = ipaddress.ip_network(text, strict=False)
        (ipv4 if network.version == 4 else ipv6).append(str(network))
    return FirewallRules(port, tuple(ipv4), tuple(ipv6))


def rule_address(network: str) -> str:
    """A CIDR as nft and ufw print it back: a single address without its /32 or /128.

    >>> rule_address("10.0.0.5/32"), rule_address("fd00::/8")
    ('10.0.0.5', 'fd00::/8')
    """
    parsed = ipaddress.ip_network(network, strict=False)
    if parsed.prefixlen == parsed.max_prefixlen:
        return str(parsed.network_address)
    return str(parsed)


def live_table_matches(listing: str | None, rules: FirewallRules) -> bool:
    """Whether ``nft list table inet gpulab_ollama`` shows the table these rules load.

    None (no such table: ``flush ruleset`` from an nftables reload, or ``nft flush ruleset``
    by hand) or a table without the drop rule or one of the allowed networks is no match.

    >>> rules = firewall_rules(11434, ["10.0.0.0/24"])
    >>> live_table_matches(None, rules)
    False
    >>> live_table_matches("ip saddr 10.0.0.0/24 tcp dport 11434 accept\\n"
    ...                    "tcp dport 11434 counter packets 0 bytes 0 drop", rules)
    True
    """
    if not listing:
        return False
    lines = listing.splitlines()
    drop = any(f"tcp dport {rules.port} " in line and line.rstrip().endswith("drop")
               for line in lines)
    words = set(listing.replace(",", " ").replace("{", " ").replace("}", " ").split())
    return drop and all(rule_address(net) in words for net in (*rules.ipv4, *rules.ipv6))


def ufw_rule(network: str, port: int) -> str:
    """The ufw rule (as ``ufw show added`` prints it) that lets ``network`` reach ``port``.

    >>> ufw_rule("10.0.0.0/24", 11434)
    "allow from 10.0.0.0/24 to any port 11434 proto tcp comment 'gpulab-ollama'"
    """
    return (f"allow from {rule_address(network)} to any port {port} proto tcp"
            f" comment '{UFW_COMMENT}'")


def ufw_changes(added: list[str], rules: FirewallRules | None) -> list[list[str]]:
    """``ufw`` argument lists that make gpulab's ufw rules exactly ``rules`` (None: none).

    ``added`` is ``ufw show added`` output; rules without gpulab's comment are the user's
    and never touched. Stale gpulab rules are deleted, missing ones added.

    >>> ufw_changes([], firewall_rules(11434, ["10.0.0.0/24"]))[0][:3]
    ['allow', 'from', '10.0.0.0/24']
    """
    have = [line.strip().removeprefix("ufw ").strip() for line in added]
    ours = [rule for rule in have if rule.endswith(f"comment '{UFW_COMMENT}'")]
    wanted = [] if rules is None else [
        ufw_rule(net, rules.port) for net in (*rules.ipv4, *rules.ipv6)
    ]
    changes = [["delete", *_ufw_words(rule)] for rule in ours if rule not in wanted]
    changes += [_ufw_words(rule) for rule in wanted if rule not in ours]
    return changes


def _ufw_words(rule: str) -> list[str]:
    words, _, comment = rule.partition(" comment ")
    return [*words.split(), "comment", comment.strip("'")] if comment else words.split()


def wsl_conf_with_systemd(text: str | None) -> str:
    """``/etc/wsl.conf`` with ``[boot] systemd=true``, every other line kept as it was.

    >>> wsl_conf_with_systemd("[network]\\nhostname=lab\\n")
    '[network]\\nhostname=lab\\n\\n[boot]\\nsystemd=true\\n'
    >>> wsl_conf_with_systemd("[boot]\\nsystemd = false\\ncommand=x\\n")
    '[boot]\\nsystemd=true\\ncommand=x\\n'
    """
    lines = (text or "").splitlines()
    out: list[str] = []
    section = ""
    boot_seen = done = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "boot" and not done:
                out.append("systemd=true")
                done = True
            section = stripped[1:-1].strip().lower()
            boot_seen = boot_seen or section == "boot"
            out.append(line)
            continue
        key = stripped.split("=", 1)[0].strip().lower() if "=" in stripped else ""
        if section == "boot" and key == "systemd":
            if not done:
                out.append("systemd=true")
                done = True
            continue
        out.append(line)
    if section == "boot" and not done:
        out.append("systemd=true")
        done = True
    if not boot_seen:
        if out and out[-1].strip():
            out.append("")
        out += ["[boot]", "systemd=true"]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Layout:
    """Install paths; the real ones by default, a temporary tree in the script's unit test."""

    opt_dir: str = OPT_DIR
    cache_dir: str = CACHE_DIR
    bin_link: str = BIN_LINK
    lib_link: str = LIB_LINK

    def version_dir(self, version: str) -> str:
        """``/opt/ollama/0.34.2``."""
        return f"{self.opt_dir}/{version}"


def _q(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _download_lines(version: str, machine: str, base: str, sha256: str | None,
                    https_proxy: str | None, no_proxy: tuple[str, ...] | list[str],
                    part: str, cache_dir: str) -> list[str]:
    """sh that leaves the release archive, verified, in ``$part`` and its sha256 in
    ``$actual`` (or exits 1 naming the URL and the setting to change)."""
    name = archive_name(version, machine)
    url = archive_url(base, version, machine)
    lines = [
        "set -eu",
        f"url={_q(url)}; name={_q(name)}; sums_url={_q(checksums_url(base, version))}",
        f"expected={_q(sha256 or '')}; part={_q(part)}; cache={_q(cache_dir)}",
        'fail() { echo "gpulab: ollama: $*" >&2; exit 1; }',
    ]
    if https_proxy:
        lines.append(f"https_proxy={_q(https_proxy)}; HTTPS_PROXY=$https_proxy")
        lines.append("export https_proxy HTTPS_PROXY")
    if no_proxy:
        lines.append(f"no_proxy={_q(','.join(no_proxy))}; NO_PROXY=$no_proxy")
        lines.append("export no_proxy NO_PROXY")
    return [
        *lines,
        'mkdir -p "$cache"',
        # curl's own --retry also retries a name that does not resolve: the loop below
        # retries only transfers that can succeed later, and says the rest once.
        "unreachable() {",
        "  case $1 in",
        '    5) echo "the proxy\'s host name does not resolve" ;;',
        '    6) echo "its host name does not resolve" ;;',
        '    7) echo "nothing accepts connections there" ;;',
        "    *) return 1 ;;",
        "  esac",
        "}",
        'fetch_fail() { why=$(unreachable "$1") || why="curl exit $1"; fail "cannot download $2'
        ' ($why); check the network, DNS and https_proxy, or set ollama_download_base to a'
        ' reachable mirror"; }',
        'if [ -z "$expected" ]; then',
        '  sums=$(curl -fsL --connect-timeout 30 "$sums_url") || fetch_fail $? "$sums_url to'
        ' verify $url (or set ollama_sha256 to the archive\'s sha256)"',
        '  expected=$(printf "%s\\n" "$sums" | awk -v n="$name" \'{f=$2; sub(/^\\*/, "", f);'
        ' sub(/^\\.\\//, "", f); if (f == n && length($1) == 64) {print tolower($1); exit}}\')',
        '  [ -n "$expected" ] || fail "$sums_url lists no $name; set ollama_sha256"',
        "fi",
        # A .part already complete (an earlier run stopped after the download) is not fetched
        # again: the server would answer the resume with 416.
        'complete() { [ -s "$part" ] &&'
        ' [ "$(sha256sum "$part" | cut -d" " -f1)" = "$expected" ]; }',
        # Five attempts, each resuming the .part where the last one stopped.
        "tries=0",
        'until complete || curl -fsL --connect-timeout 30 -C - -o "$part" "$url"',
        "do",
        "  rc=$?; tries=$((tries + 1))",
        '  if unreachable "$rc" >/dev/null; then fetch_fail "$rc" "$url"; fi',
        '  if [ "$tries" -ge 5 ]; then',
        # An HTTP error (22) such as 416 means the .part cannot be resumed: start afresh next run.
        '    [ "$rc" != 22 ] || rm -f "$part"',
        '    fail "download of $url failed (curl exit $rc, $tries tries); a partial download is'
        ' resumed on the next run; check the network and https_proxy, or set'
        ' ollama_download_base to a reachable mirror"',
        "  fi",
        "  sleep 2",
        "done",
        'actual=$(sha256sum "$part" | cut -d" " -f1)',
        'if [ "$actual" != "$expected" ]; then',
        '  rm -f "$part"',
        '  fail "sha256 mismatch for $url: expected $expected, got $actual; the download was'
        " deleted and the installed version left as it was. Set ollama_download_base to a"
        " trustworthy mirror, or ollama_sha256 to $actual if this archive is the one you"
        ' want"',
        "fi",
    ]


def fetch_script(
    version: str,
    machine: str,
    base: str,
    sha256: str | None,
    https_proxy: str | None = None,
    no_proxy: tuple[str, ...] | list[str] = (),
    layout: Layout = Layout(),
) -> str:
    """POSIX sh that downloads, verifies and unpacks one release into its versioned directory.

    Resumable: curl ``-C -`` continues ``<cache>/ollama-<ver>-<asset>.part`` across attempts
    and across runs. Nothing outside the cache and the new versioned directory is touched, so
    a failure (network, sha256 mismatch, bad archive) leaves the running version as it was;
    it exits 1 with a message naming the URL and the setting to change. ``sha256`` None:
    the expected value is read from the release's ``sha256sum.txt``.

        fetch_script("0.34.2", "x86_64", "https://mirror.lab/ollama", None)
    """
    name = archive_name(version, machine)
    part = f"{layout.cache_dir}/ollama-{version}-{name}.part"
    untar = "tar -x -I zstd" if is_zstd(version) else "tar -x -z"
    lines = _download_lines(version, machine, base, sha256, https_proxy, no_proxy, part,
                            layout.cache_dir)
    lines += [
        f"dest={_q(layout.version_dir(version))}; opt={_q(layout.opt_dir)}",
        'mkdir -p "$opt"',
        'stage=$(mktemp -d "$opt/.unpack-$name.XXXXXX")',
        "trap 'rm -rf \"$stage\"' EXIT",
        f'{untar} -f "$part" -C "$stage" || fail "cannot unpack $part (from $url)"',
        '[ -f "$stage/bin/ollama" ] && [ -d "$stage/lib/ollama" ] ||'
        ' fail "$url holds no bin/ollama and lib/ollama: not an Ollama Linux release"',
        'chmod 755 "$stage"',
        f'echo "$actual" > "$stage/{MARKER}"',
        'rm -rf "$dest"',
        'mv "$stage" "$dest"',
        'rm -f "$part"',
        'echo "gpulab: ollama: $url (sha256 $actual) unpacked in $dest"',
    ]
    return "\n".join(lines) + "\n"


def mirror_script(
    version: str,
    machine: str,
    base: str,
    sha256: str | None,
    dest_dir: str,
    https_proxy: str | None = None,
    no_proxy: tuple[str, ...] | list[str] = (),
) -> str:
    """POSIX sh that downloads and verifies one release archive into ``dest_dir``, laid out
    as the release server is (``<dest_dir>/<archive>`` and a ``sha256sum.txt`` line for it),
    so the room cache serves what hosts would fetch from ``ollama_download_base``.

        mirror_script("0.34.2", "x86_64", OLLAMA_DOWNLOAD_BASE, None, "/srv/c/ollama/v0.34.2")
    """
    name = archive_name(version, machine)
    part = f"{dest_dir}/.{name}.part"
    lines = _download_lines(version, machine, base, sha256, https_proxy, no_proxy, part,
                            dest_dir)
    lines += [
        'chmod 644 "$part"',
        'mv -f "$part" "$cache/$name"',
        # sha256sum.txt is written last: a listed archive is a complete one.
        'sums="$cache/sha256sum.txt"',
        r'{ [ -f "$sums" ] && grep -v "  $name\$" "$sums" || true; } > "$sums.new"',
        'echo "$actual  $name" >> "$sums.new"',
        'chmod 644 "$sums.new"',
        'mv -f "$sums.new" "$sums"',
        'echo "gpulab: ollama: $url (sha256 $actual) mirrored in $cache"',
    ]
    return "\n".join(lines) + "\n"


def version_in_link(target: str | None, layout: Layout = Layout()) -> str | None:
    """The version a link into ``/opt/ollama/<version>/`` points at, or None.

    >>> version_in_link("/opt/ollama/0.34.2/bin/ollama")
    '0.34.2'
    >>> version_in_link("/usr/bin/ollama") is None
    True
    """
    prefix = layout.opt_dir.rstrip("/") + "/"
    if not target or not target.startswith(prefix):
        return None
    return target[len(prefix):].split("/", 1)[0] or None


def versions_to_remove(installed: list[str], current: str, linked_before: str | None) -> list[str]:
    """The ``/opt/ollama/<version>`` trees an upgrade leaves that can go (GBs each).

    Kept: ``current`` and one previous version to switch back to, which is the one the links
    pointed at before this run, or else the newest other one. Names that are no release
    number (nothing gpulab unpacked) are never touched.

    >>> versions_to_remove(["0.32.9", "0.33.0", "0.34.2"], "0.34.2", "0.32.9")
    ['0.33.0']
    >>> versions_to_remove(["0.32.9", "0.33.0", "0.34.2"], "0.34.2", "0.34.2")
    ['0.32.9']
    """
    others = [v for v in installed if v != current and _VERSION.match(v)]
    if not others:
        return []
    previous = linked_before if linked_before in others else max(others, key=_release_order)
    return sorted((v for v in others if v != previous), key=_release_order)


def _release_order(version: str) -> tuple[tuple[int, int, int], bool, str]:
    # 0.33.0-rc2 < 0.33.0: a final release sorts after its candidates.
    return version_tuple(version), "-rc" not in version, version


def switch_link_script(path: str, target: str) -> str:
    """Point symlink ``path`` at ``target`` atomically: a new link, then ``mv -T`` over it.

    A real directory left there by install.sh is moved aside first (``mv -T`` cannot replace
    a directory), not deleted.

    >>> "mv -Tf" in switch_link_script("/usr/local/bin/ollama", "/opt/ollama/0.34.2/bin/ollama")
    True
    """
    tmp = f"{path}.gpulab-new"
    return "\n".join([
        f"mkdir -p {_q(path.rsplit('/', 1)[0] or '/')}",
        f"if [ -d {_q(path)} ] && [ ! -L {_q(path)} ]; then",
        f"  mv -T {_q(path)} {_q(path + '.pre-gpulab')}",
        "fi",
        f"ln -sfn {_q(target)} {_q(tmp)}",
        f"mv -Tf {_q(tmp)} {_q(path)}",
    ]) + "\n"
