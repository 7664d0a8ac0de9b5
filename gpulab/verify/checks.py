"""Pure verdicts: one host's observed state against its plan, as pass, fail or n/a.

No I/O here. ``gpulab.verify.probes`` reads the host through testinfra and hands the raw
outputs (``apt-mark showhold``, ``nvidia-smi``, ``/proc/modules``, Ollama's JSON) to these
functions; unit tests hand them recorded outputs of real machines. Every failure names what is
wrong and what to do about it; a check that does not apply says why instead of passing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpulab.compat.cuda import CompatError, Platform, check_pinned_toolkit
from gpulab.compat.versions import VersionError, branch_of
from gpulab.facts.model import CudaToolkit, SmiStatus
from gpulab.plan.driver import WSL_FORBIDDEN_REGEX

Status = Literal["pass", "fail", "n/a"]


@dataclass(frozen=True)
class Outcome:
    """A check's verdict and the one line a person reads."""

    status: Status
    message: str


def passed(message: str) -> Outcome:
    """The host is as planned here."""
    return Outcome("pass", message)


def failed(cause: str, fix: str) -> Outcome:
    """What is wrong, then what to do about it."""
    return Outcome("fail", f"{cause}. Fix: {fix}")


def not_applicable(reason: str) -> Outcome:
    """The check does not apply to this host, and why."""
    return Outcome("n/a", reason)


DEPLOY_AGAIN = "run `pyinfra INVENTORY deploy/gpu_host.py` again"


# --------------------------------------------------------------------------------------------
# WSL2
# --------------------------------------------------------------------------------------------


def check_wsl_systemd(wsl_systemd: bool | None, systemd_running: bool) -> Outcome:
    """WSL2 runs Ollama as a service only with ``[boot] systemd=true`` in effect.

    >>> check_wsl_systemd(True, False).status
    'fail'
    """
    if not wsl_systemd:
        return failed("/etc/wsl.conf has no [boot] systemd=true",
                      f"{DEPLOY_AGAIN} (it sets it), then `wsl --shutdown` in Windows")
    if not systemd_running:
        return failed("systemd=true is set in /etc/wsl.conf but systemd is not running",
                      "run `wsl --shutdown` in Windows and open the distribution again")
    return passed("systemd is on and running")


_WSL_FORBIDDEN = re.compile(WSL_FORBIDDEN_REGEX.strip("/"))


def check_no_linux_driver(installed_packages: Sequence[str]) -> Outcome:
    """No package inside WSL2 may install a Linux NVIDIA driver (the Windows one serves).

    >>> check_no_linux_driver(["curl", "cuda-toolkit-12-6"]).status
    'pass'
    >>> check_no_linux_driver(["nvidia-driver-550"]).status
    'fail'
    """
    found = sorted(name for name in installed_packages if _WSL_FORBIDDEN.match(name))
    if found:
        return failed(f"Linux driver packages installed inside WSL2: {', '.join(found)}",
                      f"`sudo apt-get purge {' '.join(found)}`; WSL2 uses the Windows driver")
    return passed("no Linux NVIDIA driver package installed")


def parse_dpkg_installed(text: str) -> list[str]:
    """Package names from ``dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n'``.

    >>> parse_dpkg_installed("ii  curl\\nrc  nvidia-driver-550\\n")
    ['curl']
    """
    names = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "ii":
            names.append(fields[-1])
    return names


# --------------------------------------------------------------------------------------------
# Driver packages, holds, pin, blacklist
# --------------------------------------------------------------------------------------------


def check_driver_packages(
    pre_packages: Sequence[str],
    packages: Sequence[str],
    versions: Mapping[str, str | None],
    branch: int,
    flavour: str,
) -> Outcome:
    """The planned packages (pins and headers first, then the driver) installed, the driver
    at the planned branch.

    Names that carry the branch (``nvidia-driver-580-open``) say it themselves; the others
    (Debian's ``nvidia-driver``, NVIDIA's ``nvidia-open``) must have a ``<branch>.`` version.

    >>> check_driver_packages([], ["nvidia-driver"], {"nvidia-driver": "535.216.03-1"}, 535,
    ...                       "proprietary").status
    'pass'
    >>> print(check_driver_packages([], ["nvidia-open"], {"nvidia-open": "590.44.01-1"}, 580,
    ...                             "open").message)  # doctest: +ELLIPSIS
    nvidia-open is 590.44.01-1, not branch 580...
    """
    missing = [name for name in (*pre_packages, *packages) if not versions.get(name)]
    if missing:
        return failed(f"not installed: {', '.join(missing)}", DEPLOY_AGAIN)
    for name in packages:
        version = versions[name] or ""
        if str(branch) not in name and not version.startswith(f"{branch}."):
            return failed(f"{name} is {version}, not branch {branch}",
                          f"{DEPLOY_AGAIN}, or set driver_branch to the branch you want")
    shown = ", ".join(f"{name} {versions[name]}" for name in packages)
    return passed(f"branch {branch} {flavour}: {shown}")


def parse_showhold(text: str) -> set[str]:
    """``apt-mark showhold``: one package per line (``name:arch`` on multiarch hosts).

    >>> sorted(parse_showhold("nvidia-open-580\\nlibfoo:amd64\\n"))
    ['libfoo', 'nvidia-open-580']
    """
    return {line.strip().split(":", 1)[0] for line in text.splitlines() if line.strip()}


def check_held(planned: Sequence[str], held: set[str]) -> Outcome:
    """Every package the plan holds is on hold in apt.

    >>> check_held(["nvidia-open-580"], set()).message  # doctest: +ELLIPSIS
    'not held: nvidia-open-580...'
    """
    loose = [name for name in planned if name not in held]
    if loose:
        return failed(f"not held: {', '.join(loose)} (apt may move the driver away from the "
                      "loaded kernel module)", f"`sudo apt-mark hold {' '.join(loose)}`, or "
                      f"{DEPLOY_AGAIN}")
    return passed(f"held: {', '.join(planned)}")


def check_branch_pin(pin_text: str | None, branch: int, path: str) -> Outcome:
    """The apt preferences file that keeps NVIDIA's packages on the planned branch.

    >>> check_branch_pin("Package: nvidia-*\\nPin: version 580.*\\n", 580, "/p").status
    'pass'
    """
    if pin_text is None:
        return failed(f"{path} is missing", DEPLOY_AGAIN)
    wanted = f"Pin: version {branch}.*"
    if wanted not in pin_text.splitlines():
        return failed(f"{path} does not say `{wanted}`", DEPLOY_AGAIN)
    return passed(f"{path} keeps apt on branch {branch}")


def parse_blacklist(text: str) -> list[str]:
    """The quoted entries of an ``Unattended-Upgrade::Package-Blacklist`` block.

    >>> parse_blacklist('Unattended-Upgrade::Package-Blacklist {\\n  "^nvidia-driver$";\\n};')
    ['^nvidia-driver$']
    """
    return re.findall(r'"([^"]*)"\s*;', text)


def check_blacklist(text: str | None, patterns: Sequence[str], path: str) -> Outcome:
    """unattended-upgrades skips every driver package (it would break the loaded module)."""
    if text is None:
        return failed(f"{path} is missing: unattended-upgrades may upgrade the driver overnight",
                      DEPLOY_AGAIN)
    listed = set(parse_blacklist(text))
    absent = [pattern for pattern in patterns if pattern not in listed]
    if absent:
        return failed(f"{path} lacks {', '.join(absent)}", DEPLOY_AGAIN)
    return passed(f"{path} blacklists the driver packages")


# --------------------------------------------------------------------------------------------
# The running driver
# --------------------------------------------------------------------------------------------


def check_smi(smi: SmiStatus, branch: int | None) -> Outcome:
    """``nvidia-smi`` answers, and (Linux driver) reports the planned branch.

    >>> from gpulab.facts.model import SmiGpu
    >>> check_smi(SmiStatus(exit_code=0, gpus=(SmiGpu(name="T4", driver_version="580.95.05"),)),
    ...           580).status
    'pass'
    """
    if smi.exit_code is None:
        return failed("nvidia-smi is not installed", DEPLOY_AGAIN)
    if smi.exit_code != 0 or not smi.gpus:
        said = smi.message or f"exit status {smi.exit_code}"
        if "mismatch" in said.lower():
            fix = "reboot the host so the kernel loads the module that matches the library"
        else:
            fix = "reboot if the driver was just installed; else see the deploy's diagnosis"
        return failed(f"nvidia-smi fails: {said}", fix)
    versions = sorted({gpu.driver_version for gpu in smi.gpus})
    names = ", ".join(gpu.name for gpu in smi.gpus)
    if branch is not None and any(branch_of(v) != branch for v in versions):
        return failed(f"nvidia-smi reports driver {', '.join(versions)}, not branch {branch}",
                      "reboot into the installed driver, or " + DEPLOY_AGAIN)
    return passed(f"{names}: driver {', '.join(versions)}")


def parse_proc_modules(text: str) -> set[str]:
    """Module names from ``/proc/modules`` (first column).

    >>> sorted(parse_proc_modules("nvidia_uvm 1961984 0 - Live 0x0\\nnvidia 1 2 x Live 0x0\\n"))
    ['nvidia', 'nvidia_uvm']
    """
    return {line.split()[0] for line in text.splitlines() if line.strip()}


REQUIRED_MODULES = ("nvidia", "nvidia_uvm")


def check_modules(loaded: set[str]) -> Outcome:
    """``nvidia`` drives the GPU; without ``nvidia_uvm`` CUDA (and Ollama) falls back to CPU."""
    missing = [name for name in REQUIRED_MODULES if name not in loaded]
    if "nvidia" in missing and "nouveau" in loaded:
        return failed("nouveau is loaded instead of nvidia",
                      "reboot (the driver blacklists nouveau); if it persists, rebuild the "
                      "initramfs with `sudo update-initramfs -u`")
    if missing:
        return failed(f"not loaded: {', '.join(missing)}",
                      f"`sudo modprobe {' '.join(missing)}`; if that fails, reboot and see "
                      "`sudo dmesg | grep -i nvidia`")
    return passed("nvidia and nvidia_uvm are loaded")


def parse_kernel_modules(text: str) -> dict[str, bool]:
    """``KERNEL yes|no`` lines (an nvidia module file under ``/lib/modules/KERNEL``).

    >>> parse_kernel_modules("6.8.0-90-generic yes\\n6.8.0-91-generic no\\n")
    {'6.8.0-90-generic': True, '6.8.0-91-generic': False}
    """
    found = {}
    for line in text.splitlines():
        kernel, _, answer = line.strip().partition(" ")
        if kernel:
            found[kernel] = answer == "yes"
    return found


def check_every_kernel_has_the_module(kernels: Mapping[str, bool], running: str,
                                      upgrade_hint: str) -> Outcome:
    """Each installed kernel image has an nvidia module to load, so any boot has a GPU.

    A kernel that arrived without its module (an update while the driver was held, a DKMS
    build that failed) boots to no GPU: the morning after, not today.
    """
    if not kernels:
        return failed("no installed linux-image package was found", DEPLOY_AGAIN)
    without = sorted(kernel for kernel, has_module in kernels.items() if not has_module)
    if without:
        which = ", ".join(f"{k} (running)" if k == running else k for k in without)
        return failed(f"no nvidia module for kernel {which}: booting it leaves the GPU unused",
                      upgrade_hint)
    return passed(f"nvidia module present for {', '.join(sorted(kernels))}")


_LIBRARY = re.compile(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$")


def parse_nvml_versions(listing: str) -> set[str]:
    """Versions in ``libnvidia-ml.so.<version>`` file names (one path per line).

    >>> parse_nvml_versions("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\\n"
    ...                     "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05\\n")
    {'580.95.05'}
    """
    return {m[1] for line in listing.split() if (m := _LIBRARY.search(line))}


def check_module_matches_library(module: str | None, libraries: set[str]) -> Outcome:
    """The loaded kernel module's version equals the userspace NVML library's.

    After an apt upgrade without a reboot they differ and nvidia-smi says "Driver/library
    version mismatch".

    >>> check_module_matches_library("580.95.05", {"580.105.08"}).status
    'fail'
    """
    if module is None:
        return failed("the nvidia module is not loaded", "reboot, then check again")
    if not libraries:
        return failed("no libnvidia-ml.so.<version> found", DEPLOY_AGAIN)
    if libraries != {module}:
        return failed(f"loaded module {module}, userspace library {', '.join(sorted(libraries))}"
                      " (Driver/library version mismatch)",
                      "reboot so the new module loads, and keep the driver held")
    return passed(f"module and library are both {module}")


# --------------------------------------------------------------------------------------------
# CUDA toolkit
# --------------------------------------------------------------------------------------------


def check_toolkit_installed(
    toolkits: Sequence[CudaToolkit], prefix: str, version: str
) -> Outcome:
    """The planned toolkit's ``version.json`` under its prefix says the planned update."""
    found = {toolkit.path: toolkit.version for toolkit in toolkits}
    if prefix not in found:
        others = ", ".join(f"{p} ({v})" for p, v in sorted(found.items())) or "none"
        return failed(f"no toolkit under {prefix} (installed: {others})", DEPLOY_AGAIN)
    if found[prefix] != version:
        return failed(f"{prefix} is CUDA {found[prefix]}, planned {version}",
                      f"{DEPLOY_AGAIN} (the apt pin holds the planned update)")
    return passed(f"CUDA {version} under {prefix}")


def check_cuda_link(resolved: str | None, prefix: str) -> Outcome:
    """``/usr/local/cuda`` resolves to the planned toolkit (through update-alternatives)."""
    if resolved is None:
        return failed("/usr/local/cuda does not exist", DEPLOY_AGAIN)
    if resolved.rstrip("/") != prefix:
        return failed(f"/usr/local/cuda points at {resolved}, not {prefix}",
                      f"`sudo update-alternatives --set cuda {prefix}`, or {DEPLOY_AGAIN}")
    return passed(f"/usr/local/cuda is {prefix}")


_NVCC_RELEASE = re.compile(r"release (\d+\.\d+), V(\S+)")


def parse_nvcc_release(text: str) -> tuple[str, str] | None:
    """(``13.0``, ``13.0.48``) from ``nvcc --version``'s last line, or None.

    >>> parse_nvcc_release("Cuda compilation tools, release 12.6, V12.6.77\\n")
    ('12.6', '12.6.77')
    """
    m = _NVCC_RELEASE.search(text)
    return (m[1], m[2]) if m else None


def check_nvcc(exit_code: int, output: str, version: str) -> Outcome:
    """A login shell finds ``nvcc`` (through /etc/profile.d) and it is the planned release.

    nvcc prints the release (``12.6``) and its own build number, not the toolkit update;
    the update is checked from ``version.json`` by the toolkit check.
    """
    release = parse_nvcc_release(output)
    major_minor = ".".join(version.split(".")[:2])
    if exit_code != 0 or release is None:
        return failed(f"`nvcc --version` in a login shell fails: {output.strip()[-200:]}",
                      "log in again (PATH comes from /etc/profile.d/gpulab-cuda.sh), or "
                      + DEPLOY_AGAIN)
    if release[0] != major_minor:
        return failed(f"nvcc is release {release[0]}, planned {major_minor}",
                      "something earlier on PATH shadows /usr/local/cuda/bin: "
                      "`bash -lc 'type -a nvcc'`")
    return passed(f"nvcc release {release[0]}, V{release[1]}")


def check_driver_runs_toolkit(driver: str, toolkit: str, platform: Platform) -> Outcome:
    """The running driver meets the toolkit's minimum (Table 3 of the CUDA release notes)."""
    try:
        row = check_pinned_toolkit(toolkit, driver, platform)
    except (CompatError, VersionError) as error:
        return failed(str(error), "upgrade the driver, or pin an older cuda_toolkit")
    return passed(f"driver {driver} runs CUDA {toolkit} (needs >= {row.min_driver})")


# --------------------------------------------------------------------------------------------
# Ollama
# --------------------------------------------------------------------------------------------


def check_ollama_version(link_target: str | None, version: str, link: str) -> Outcome:
    """``/usr/local/bin/ollama`` is the pinned release's binary."""
    wanted = f"/opt/ollama/{version}/bin/ollama"
    if link_target is None:
        return failed(f"{link} does not exist", DEPLOY_AGAIN)
    if link_target != wanted:
        return failed(f"{link} is {link_target}, not {wanted}",
                      f"{DEPLOY_AGAIN}, or set ollama_version to the release you want")
    return passed(f"Ollama {version}")


def check_service(service: str, enabled: bool, active: bool, user: str | None,
                  wanted_user: str) -> Outcome:
    """A gpulab service is enabled, running, and runs as its own unprivileged user.

    >>> check_service("vllm", True, True, "root", "vllm").message[:30]
    'vllm.service runs as root, not'
    """
    if not active:
        return failed(f"{service}.service is not running",
                      f"`sudo systemctl start {service}`; if it stops again: "
                      f"`journalctl -u {service} -b`")
    if not enabled:
        return failed(f"{service}.service is not enabled: it will not start after a reboot",
                      f"`sudo systemctl enable {service}`")
    if user != wanted_user:
        return failed(f"{service}.service runs as {user or 'nobody (no main process)'}, "
                      f"not {wanted_user}", DEPLOY_AGAIN)
    return passed(f"enabled, active, runs as {wanted_user}")


def listening_addresses(sockets: Sequence[str], port: int) -> list[str]:
    """``host:port`` of testinfra's ``tcp://host:port`` listeners on ``port``.

    >>> listening_addresses(["tcp://127.0.0.1:11434", "tcp://0.0.0.0:22"], 11434)
    ['127.0.0.1:11434']
    """
    found = []
    for sock in sockets:
        if sock.startswith(("tcp://", "tcp6://")):
            address = sock.split("://", 1)[1]
            if address.rsplit(":", 1)[-1] == str(port):
                found.append(address)
    return sorted(set(found))


def check_listeners(addresses: Sequence[str], host: str, port: int) -> Outcome:
    """Ollama listens on the planned address only; anything wider exposes it to the LAN.

    >>> check_listeners(["0.0.0.0:11434"], "127.0.0.1", 11434).status
    'fail'
    """
    wanted = f"{host}:{port}"
    if not addresses:
        return failed(f"nothing listens on port {port}", "`sudo systemctl restart ollama`; "
                      "`journalctl -u ollama -b` says why it does not listen")
    if list(addresses) != [wanted]:
        return failed(f"listening on {', '.join(addresses)}, planned {wanted} only",
                      "remove OLLAMA_HOST overrides outside /etc/systemd/system/"
                      "ollama.service.d/gpulab.conf (`systemctl cat ollama`), or set "
                      f"ollama_host; then {DEPLOY_AGAIN}")
    return passed(f"listens on {wanted} only")


def check_firewall(table: str | None, allowed_clients: Sequence[str], name: str) -> Outcome:
    """Exposed beyond loopback, the nftables table admits only the allowed clients."""
    if table is None:
        return failed(f"nftables table inet {name} is missing: every client on the network "
                      "reaches Ollama", f"`sudo systemctl restart gpulab-ollama-firewall`, or "
                      f"{DEPLOY_AGAIN}")
    absent = [client for client in allowed_clients if client not in table]
    if absent:
        return failed(f"inet {name} does not allow {', '.join(absent)}", DEPLOY_AGAIN)
    return passed(f"inet {name} allows {', '.join(allowed_clients)} only")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def check_api_version(exit_code: int, body: str, version: str, url: str) -> Outcome:
    """``/api/version`` answers with the pinned version (the binary actually serving)."""
    answer = _json(body) if exit_code == 0 else None
    if not isinstance(answer, dict) or "version" not in answer:
        return failed(f"{url} does not answer ({body.strip()[-200:] or f'exit {exit_code}'})",
                      "`journalctl -u ollama -b` says why the server is not up")
    if answer["version"] != version:
        return failed(f"{url} says {answer['version']}, pinned {version}",
                      "`sudo systemctl restart ollama` (an old process still serves)")
    return passed(f"{url} answers {version}")


# --------------------------------------------------------------------------------------------
# Course models (Ollama's /api/tags, /api/ps, /api/embed JSON, docs/api.md)
# --------------------------------------------------------------------------------------------


def full_model_name(name: str) -> str:
    """Ollama lists untagged names with ``:latest``.

    >>> full_model_name("nomic-embed-text"), full_model_name("qwen2.5:7b")
    ('nomic-embed-text:latest', 'qwen2.5:7b')
    """
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def check_models_listed(tags_body: str, planned: Mapping[str, str | None],
                        incomplete: Mapping[str, str] | None = None) -> Outcome:
    """Every planned model is in ``/api/tags``, complete on disk, with the planned digest.

    ``planned`` maps a model name to its planned manifest digest (64 hex, the sha256 of the
    manifest file, as ``/api/tags`` reports it), or None when the plan pins none.
    ``incomplete`` names the models whose store on the host lacks something, with what: the
    server still lists a model whose blob was deleted, until it loads it.

    >>> tags = '{"models": [{"name": "m:latest", "digest": "ab"}]}'
    >>> check_models_listed(tags, {"m": "ab"}).status
    'pass'
    >>> check_models_listed(tags, {"m": "ab"}, {"m": "1 blob missing"}).message[:25]
    'incomplete on disk: m (1 '
    """
    tags = _json(tags_body)
    if not isinstance(tags, dict) or not isinstance(tags.get("models"), list):
        return failed(f"/api/tags did not answer with a model list ({tags_body.strip()[:200]})",
                      "`journalctl -u ollama -b`")
    listed = {str(m.get("name") or m.get("model")): str(m.get("digest", ""))
              for m in tags["models"] if isinstance(m, dict)}
    missing = [name for name in planned if full_model_name(name) not in listed]
    if missing:
        return failed(f"not pulled: {', '.join(missing)}",
                      f"`ollama pull {' '.join(missing)}` on the host, or {DEPLOY_AGAIN}")
    broken = {name: why for name, why in (incomplete or {}).items() if name in planned}
    if broken:
        shown = ", ".join(f"{name} ({why})" for name, why in broken.items())
        return failed(f"incomplete on disk: {shown}",
                      f"{DEPLOY_AGAIN} (it brings back what is missing)")
    wrong = [name for name, digest in planned.items()
             if digest and listed[full_model_name(name)] != digest.removeprefix("sha256:")]
    if wrong:
        shown = ", ".join(f"{n} is {listed[full_model_name(n)][:12]}, planned "
                          f"{(planned[n] or '').removeprefix('sha256:')[:12]}" for n in wrong)
        return failed(shown, f"`ollama rm` the model and {DEPLOY_AGAIN}")
    return passed(f"{len(planned)} model(s) listed, complete on disk: {', '.join(planned)}")


def check_model_on_gpu(ps_body: str, model: str) -> Outcome:
    """After a generation, ``/api/ps`` shows the model with memory on the GPU (size_vram > 0).

    >>> check_model_on_gpu('{"models":[{"name":"qwen2.5:7b","size":5,"size_vram":0}]}',
    ...                    "qwen2.5:7b").status
    'fail'
    """
    ps = _json(ps_body)
    models = ps.get("models") if isinstance(ps, dict) else None
    if not isinstance(models, list):
        return failed(f"/api/ps did not answer ({ps_body.strip()[:200]})",
                      "`journalctl -u ollama -b`")
    wanted = full_model_name(model)
    row = next((m for m in models if isinstance(m, dict)
                and wanted in (m.get("name"), m.get("model"))), None)
    if row is None:
        return failed(f"{model} is not loaded after a generation", "`journalctl -u ollama -b`")
    vram, size = int(row.get("size_vram") or 0), int(row.get("size") or 0)
    if vram <= 0:
        return failed(f"{model} runs on the CPU (size_vram 0)",
                      "check that nvidia_uvm is loaded and `journalctl -u ollama -b | grep -i "
                      "gpu`; then `sudo systemctl restart ollama`")
    share = f"{100 * vram // size}%" if size else f"{vram} B"
    return passed(f"{model}: {share} on the GPU")


def check_embedding(embed_body: str, model: str, dimension: int | None) -> Outcome:
    """``/api/embed`` returns one vector of the model's dimension.

    >>> check_embedding('{"embeddings": [[0.1, 0.2]]}', "m", 2).status
    'pass'
    """
    answer = _json(embed_body)
    vectors = answer.get("embeddings") if isinstance(answer, dict) else None
    if not isinstance(vectors, list) or not vectors or not isinstance(vectors[0], list):
        return failed(f"/api/embed with {model} returned no vector ({embed_body.strip()[:200]})",
                      "`journalctl -u ollama -b`")
    size = len(vectors[0])
    if dimension is not None and size != dimension:
        return failed(f"{model} returned {size} dimensions, expected {dimension}",
                      f"`ollama rm {model}` and {DEPLOY_AGAIN}")
    return passed(f"{model}: {size}-dimensional vectors")


# --------------------------------------------------------------------------------------------
# vLLM (its OpenAI-compatible /v1/models)
# --------------------------------------------------------------------------------------------


def check_vllm_models(exit_code: int, body: str, model: str, url: str) -> Outcome:
    """``/v1/models`` (with the key, when one is set) lists the planned model.

    >>> check_vllm_models(0, '{"data": [{"id": "Qwen/Qwen2.5-7B-Instruct-AWQ"}]}',
    ...                   "Qwen/Qwen2.5-7B-Instruct-AWQ", "u").status
    'pass'
    """
    answer = _json(body) if exit_code == 0 else None
    rows = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        return failed(f"{url} does not answer ({body.strip()[-200:] or f'exit {exit_code}'})",
                      "`journalctl -u vllm -b` (loading a model takes minutes after a start)")
    served = [str(row.get("id")) for row in rows if isinstance(row, dict)]
    if model not in served:
        return failed(f"{url} serves {', '.join(served) or 'nothing'}, planned {model}",
                      f"`sudo systemctl restart vllm`, or {DEPLOY_AGAIN}")
    return passed(f"serves {model}")


def check_vllm_key_required(status_code: str, url: str) -> Outcome:
    """A request without the key is refused (401), as vLLM does when ``--api-key`` is set.

    >>> check_vllm_key_required("401", "u").status, check_vllm_key_required("200", "u").status
    ('pass', 'fail')
    """
    if status_code == "401":
        return passed(f"{url} without the key: 401")
    return failed(f"{url} answered {status_code or 'nothing'} to a request without the key",
                  f"the service does not read its key: {DEPLOY_AGAIN}, then "
                  "`sudo systemctl restart vllm`")
