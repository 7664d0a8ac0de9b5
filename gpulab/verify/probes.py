"""What each check reads from a host through testinfra's host API, and the table of checks.

A check is named for the question a person asks before class. Its probe reads the host
(``host.package``, ``host.service``, ``host.socket``, ``host.file``, ``host.run``) and hands
the raw outputs to a pure verdict in ``gpulab.verify.checks``. What the host *should* have
comes from its ``HostPlan``, made from the same settings and facts the deploy used.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from pyinfra.api.facts import FactBase

from gpulab.compat.cuda import Platform
from gpulab.deploys.cuda import PROFILE_SCRIPT
from gpulab.deploys.nvidia import BLACKLIST_CONF, BRANCH_PIN
from gpulab.facts.cuda import CudaToolkits
from gpulab.facts.gather import FactsInOneCommand, gather_host_facts, stand_in_facts
from gpulab.facts.model import CudaToolkit, FactsFile, HostFacts
from gpulab.facts.nvidia import LoadedDriverVersion, NvidiaSmi
from gpulab.facts.pci import NvidiaPciDevices
from gpulab.models.catalog import EMBEDDING_DIMENSIONS
from gpulab.models.store import seeded_source
from gpulab.plan import ollama as ollama_lib
from gpulab.plan import vllm as vllm_lib
from gpulab.plan.driver import blacklist_patterns
from gpulab.plan.host import HostPlan, PlanError, make_plan
from gpulab.settings import Settings
from gpulab.verify import checks
from gpulab.verify.checks import Outcome, failed, not_applicable, passed
from gpulab.verify.connection import Target

T = TypeVar("T")
API_TIMEOUT_S = 10
GENERATE_TIMEOUT_S = 300  # loading a 5 GB model from disk on a classroom SSD


class TestinfraFacts:
    """gpulab's pyinfra facts read through a testinfra host, with pyinfra's semantics.

    The fact's own ``command()`` runs; a failing command or no output gives ``default()``,
    a missing ``requires_command`` binary gives ``default()`` too; else ``process(lines)``.
    So ``gather_host_facts`` makes the same ``HostFacts`` here as inside a deploy.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, host: Any) -> None:
        self.host = host

    def get_fact(self, name_or_cls: type[FactBase[T]], *args: Any, **kwargs: Any) -> T:
        fact = name_or_cls()
        required = fact.requires_command(*args, **kwargs)
        if required and not self.host.exists(str(required)):
            return fact.default()
        result = self.host.run(str(fact.command(*args, **kwargs)))
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.rc != 0 or not lines:
            return fact.default()
        return fact.process(lines)


@dataclass
class Subject:
    """One reachable host under verification: its testinfra host, facts, settings and plan."""

    name: str
    host: Any  # testinfra.host.Host
    facts: HostFacts
    settings: Settings
    plan: HostPlan
    facts_source: str

    def fact(self, cls: type[FactBase[T]]) -> T:
        """A pyinfra fact read live now (recorded facts only decide the plan)."""
        return TestinfraFacts(self.host).get_fact(cls)

    def text(self, path: str) -> str | None:
        """A file's content, or None when it does not exist."""
        handle = self.host.file(path)
        return str(handle.content_string) if handle.exists else None

    def login_shell(self, command: str) -> Any:
        return self.host.run(f"bash -lc {shlex.quote(command)}")

    @cached_property
    def ollama_running(self) -> bool:
        return bool(self.host.service("ollama").is_running)

    @cached_property
    def has_gpu(self) -> bool:
        """An NVIDIA GPU on the PCI bus now, or (WSL2) one the Windows driver shows.

        Read live even when the plan comes from recorded facts: the GPU checks ask about the
        hardware in front of us, as the deploy's post-reboot check does.
        """
        if self.facts.wsl:
            return bool(self.fact(NvidiaSmi).gpus)
        return bool(self.fact(NvidiaPciDevices))


def connect(target: Target, ssh_config: Path) -> Any:
    """The testinfra host for a target; raises when it cannot be reached."""
    import testinfra

    host = testinfra.get_host(target.hostspec, ssh_config=str(ssh_config), sudo=target.sudo,
                              sudo_user=target.sudo_user)
    host.run("true")  # the ssh backend raises RuntimeError when ssh itself fails (exit 255)
    return host


def prepare(target: Target, host: Any, settings: Settings) -> Subject:
    """Facts (live through testinfra, or the recorded file) and the plan; PlanError if none."""
    if target.recorded_facts:
        recorded = FactsFile.model_validate_json(Path(target.recorded_facts).read_text()).facts
        facts = stand_in_facts(recorded, TestinfraFacts(host), settings.ollama_models_dir)
        source = f"recorded facts {target.recorded_facts}"
    else:
        models_dir = settings.ollama_models_dir
        facts = gather_host_facts(FactsInOneCommand(TestinfraFacts(host), models_dir),
                                  models_dir)
        source = "live facts"
    # seeded: a model whose manifest is not the instructor's store's is not ready either
    plan = make_plan(target.name, facts, settings, seeded_source(settings))
    return Subject(target.name, host, facts, settings, plan, source)


def plan_problem(error: PlanError) -> Outcome:
    """A plan that cannot be made: the deploy would stop here too."""
    return failed(str(error), "change the host's data as the message says (`gpulab plan "
                  "INVENTORY --limit HOST` shows it without connecting twice)")


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------


Probe = Callable[[Subject], Outcome]


def _only_if(reason_not: Callable[[Subject], str | None]) -> Callable[[Probe], Probe]:
    """A probe that runs only where it applies; elsewhere n/a with ``reason_not``'s reason."""

    def wrap(run: Probe) -> Probe:
        def probe(subject: Subject) -> Outcome:
            reason = reason_not(subject)
            return not_applicable(reason) if reason else run(subject)

        return probe

    return wrap


def _not_wsl(subject: Subject) -> str | None:
    return None if subject.facts.wsl else "not WSL2"


def _no_driver(subject: Subject) -> str | None:
    driver = subject.plan.driver
    return None if driver.source and driver.branch else f"no driver planned: {driver.reason}"


def _no_driver_held(subject: Subject) -> str | None:
    """Why no hold is expected: no driver, or a route the plan holds nothing on
    (``driver_hold_kernel: false``, whose reason the plan states)."""
    driver = subject.plan.driver
    return _no_driver(subject) or (None if driver.held else f"nothing held: {driver.reason}")


def _no_gpu(subject: Subject) -> str | None:
    return None if subject.has_gpu else "no NVIDIA GPU on this host"


def _no_linux_driver_gpu(subject: Subject) -> str | None:
    if subject.facts.wsl:
        return "WSL2: the Windows driver provides the kernel side"
    return _no_gpu(subject)


def _no_toolkit(subject: Subject) -> str | None:
    toolkit = subject.plan.toolkit
    return None if toolkit.version and toolkit.prefix else (
        f"no CUDA toolkit planned: {toolkit.reason}")


def _ollama_cannot_run(subject: Subject) -> str | None:
    plan = subject.plan.ollama
    return plan.reason if plan.state == "absent" or not plan.service_can_run else None


def _ollama_not_serving(subject: Subject) -> str | None:
    """What needs the server running is not checked when it is not (its own check fails)."""
    if reason := _ollama_cannot_run(subject):
        return reason
    if not subject.ollama_running:
        return "not checked: ollama.service is not running (see its check)"
    return None


def _toolkit_not_linked(subject: Subject) -> str | None:
    if reason := _no_toolkit(subject):
        return reason
    if _cuda_link_target(subject) != subject.plan.toolkit.prefix:
        return "not checked: /usr/local/cuda is not the planned toolkit (see its check)"
    return None


_wsl_only = _only_if(_not_wsl)
_driver_installed = _only_if(_no_driver)
_driver_held = _only_if(_no_driver_held)
_gpu_present = _only_if(_no_gpu)
_linux_driver_gpu = _only_if(_no_linux_driver_gpu)
_toolkit_planned = _only_if(_no_toolkit)
_ollama_runs = _only_if(_ollama_cannot_run)
_ollama_serving = _only_if(_ollama_not_serving)
_toolkit_linked = _only_if(_toolkit_not_linked)


def probe_os(subject: Subject) -> Outcome:
    return passed(f"{subject.plan.platform} ({subject.facts_source})")


@_wsl_only
def probe_wsl_systemd(subject: Subject) -> Outcome:
    from gpulab.facts.system import SystemdRunning, WslSystemd

    return checks.check_wsl_systemd(subject.fact(WslSystemd), subject.fact(SystemdRunning))


@_wsl_only
def probe_wsl_no_driver(subject: Subject) -> Outcome:
    listing = subject.host.run("dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n'").stdout
    return checks.check_no_linux_driver(checks.parse_dpkg_installed(listing))


@_driver_installed
def probe_driver_packages(subject: Subject) -> Outcome:
    driver = subject.plan.driver
    versions: dict[str, str | None] = {}
    for name in (*driver.pre_packages, *driver.packages):
        package = subject.host.package(name)
        versions[name] = package.version if package.is_installed else None
    assert driver.branch is not None and driver.flavour is not None
    return checks.check_driver_packages(driver.pre_packages, driver.packages, versions,
                                        driver.branch, driver.flavour)


@_driver_held
def probe_driver_held(subject: Subject) -> Outcome:
    held = checks.parse_showhold(subject.host.run("apt-mark showhold").stdout)
    return checks.check_held(subject.plan.driver.held, held)


@_driver_installed
def probe_branch_pin(subject: Subject) -> Outcome:
    assert subject.plan.driver.branch is not None
    return checks.check_branch_pin(subject.text(BRANCH_PIN), subject.plan.driver.branch,
                                   BRANCH_PIN)


@_driver_held
def probe_blacklist(subject: Subject) -> Outcome:
    patterns = blacklist_patterns(subject.plan.driver.held)
    return checks.check_blacklist(subject.text(BLACKLIST_CONF), patterns, BLACKLIST_CONF)


@_gpu_present
def probe_smi(subject: Subject) -> Outcome:
    return checks.check_smi(subject.fact(NvidiaSmi), subject.plan.driver.branch)


@_linux_driver_gpu
def probe_modules(subject: Subject) -> Outcome:
    return checks.check_modules(checks.parse_proc_modules(subject.text("/proc/modules") or ""))


# One line per installed kernel image: its version, and whether an nvidia module file
# (Ubuntu's prebuilt nvidia.ko, a DKMS build, Debian's nvidia-current.ko) is there for it.
KERNEL_MODULES_SCRIPT = (
    "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' 'linux-image-[0-9]*' 2>/dev/null"
    " | awk '$1 == \"ii\" { sub(/^linux-image-/, \"\", $2); print $2 }'"
    " | while read -r k; do"
    " if find \"/lib/modules/$k\" -name 'nvidia.ko*' -o -name 'nvidia-current.ko*'"
    " 2>/dev/null | grep -q .; then echo \"$k yes\"; else echo \"$k no\"; fi; done"
)


@_linux_driver_gpu
def probe_kernel_modules(subject: Subject) -> Outcome:
    if subject.plan.driver.source is None:
        return not_applicable(f"no driver planned: {subject.plan.driver.reason}")
    kernels = checks.parse_kernel_modules(subject.host.run(KERNEL_MODULES_SCRIPT).stdout)
    hint = ("run gpulab with `driver_upgrade: true` (it moves kernel, modules and driver "
            "together), or remove that kernel")
    return checks.check_every_kernel_has_the_module(kernels, subject.facts.kernel, hint)


@_linux_driver_gpu
def probe_module_library(subject: Subject) -> Outcome:
    listing = subject.host.run(
        "ls -1 /usr/lib/*-linux-gnu/libnvidia-ml.so.* /usr/lib64/libnvidia-ml.so.* 2>/dev/null"
    ).stdout
    return checks.check_module_matches_library(subject.fact(LoadedDriverVersion),
                                               checks.parse_nvml_versions(listing))


@_toolkit_planned
def probe_toolkit(subject: Subject) -> Outcome:
    toolkit = subject.plan.toolkit
    assert toolkit.prefix is not None and toolkit.version is not None
    found: tuple[CudaToolkit, ...] = subject.fact(CudaToolkits)
    return checks.check_toolkit_installed(found, toolkit.prefix, toolkit.version)


def _cuda_link_target(subject: Subject) -> str | None:
    """Where ``/usr/local/cuda`` resolves to (through /etc/alternatives), None if nowhere."""
    link = subject.host.file("/usr/local/cuda")
    return str(link.linked_to).rstrip("/") if link.exists and link.is_symlink else None


@_toolkit_planned
def probe_cuda_link(subject: Subject) -> Outcome:
    assert subject.plan.toolkit.prefix is not None
    return checks.check_cuda_link(_cuda_link_target(subject), subject.plan.toolkit.prefix)


@_toolkit_linked
def probe_nvcc(subject: Subject) -> Outcome:
    assert subject.plan.toolkit.version is not None
    result = subject.login_shell("nvcc --version")
    outcome = checks.check_nvcc(result.rc, _said(result),
                                subject.plan.toolkit.version)
    if outcome.status == "fail" and not subject.host.file(PROFILE_SCRIPT).exists:
        return failed(f"{PROFILE_SCRIPT} is missing: login shells do not find nvcc",
                      checks.DEPLOY_AGAIN)
    return outcome


@_toolkit_planned
def probe_driver_runs_toolkit(subject: Subject) -> Outcome:
    assert subject.plan.toolkit.version is not None
    if subject.facts.wsl:
        smi = subject.fact(NvidiaSmi)
        version = next((gpu.driver_version for gpu in smi.gpus), None)
        platform: Platform = "windows"
    else:
        version = subject.fact(LoadedDriverVersion)
        platform = "linux"
    if version is None:
        if not subject.has_gpu:
            return not_applicable("no NVIDIA GPU: no driver runs the toolkit here")
        return failed("no NVIDIA driver is loaded", "reboot, then see `nvidia-smi`")
    return checks.check_driver_runs_toolkit(version, subject.plan.toolkit.version, platform)


def probe_ollama_version(subject: Subject) -> Outcome:
    plan = subject.plan.ollama
    if plan.state == "absent":
        return not_applicable(plan.reason)
    link = subject.host.file(ollama_lib.BIN_LINK)
    target = str(link.linked_to) if link.exists else None
    return checks.check_ollama_version(target, plan.version, ollama_lib.BIN_LINK)


def _service_state(subject: Subject, unit: str, wanted_user: str) -> Outcome:
    """``unit`` enabled, running, and its main process owned by ``wanted_user``."""
    service = subject.host.service(unit)
    pid = subject.host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    user = None
    if pid not in ("", "0"):
        user = subject.host.run(f"ps -o user= -p {int(pid)}").stdout.strip() or None
    return checks.check_service(unit, service.is_enabled, service.is_running, user, wanted_user)


@_ollama_runs
def probe_ollama_service(subject: Subject) -> Outcome:
    return _service_state(subject, "ollama", "ollama")


@_ollama_serving
def probe_ollama_listeners(subject: Subject) -> Outcome:
    plan = subject.plan.ollama
    sockets = subject.host.socket.get_listening_sockets()
    return checks.check_listeners(checks.listening_addresses(sockets, plan.listen_port),
                                  plan.listen_host, plan.listen_port)


@_ollama_runs
def probe_firewall(subject: Subject) -> Outcome:
    plan = subject.plan.ollama
    if not plan.exposed:
        return not_applicable(f"listens on {plan.listen_host} only: no firewall needed")
    result = subject.host.run(f"nft list table inet {ollama_lib.FIREWALL_TABLE}")
    return checks.check_firewall(result.stdout if result.rc == 0 else None,
                                 plan.allowed_clients, ollama_lib.FIREWALL_TABLE)


def _api_url(subject: Subject, path: str) -> str:
    plan = subject.plan.ollama
    wildcard = plan.listen_host in ("", "0.0.0.0", "::")
    address = "127.0.0.1" if wildcard else plan.listen_host
    address = f"[{address}]" if ":" in address else address
    return f"http://{address}:{plan.listen_port}{path}"


def _api(subject: Subject, path: str, body: dict[str, object] | None = None,
         timeout: int = API_TIMEOUT_S) -> Any:
    url = shlex.quote(_api_url(subject, path))
    command = f"curl -sS --fail-with-body --max-time {timeout} {url}"
    if body is not None:
        command += f" -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    return subject.host.run(command)


def _said(result: Any) -> str:
    """A command's stdout, then its stderr: curl's reason follows the server's body."""
    return " ".join(part for part in (result.stdout, result.stderr) if part)


@_ollama_serving
def probe_api_version(subject: Subject) -> Outcome:
    result = _api(subject, "/api/version")
    return checks.check_api_version(result.rc, _said(result),
                                    subject.plan.ollama.version, _api_url(subject, "/api/version"))


def _model_names(subject: Subject) -> tuple[str, ...]:
    return tuple(fit.name for fit in subject.plan.models)


def _chat_model(subject: Subject) -> str | None:
    return next((name for name in _model_names(subject) if name not in EMBEDDING_DIMENSIONS),
                None)


def _embedding_model(subject: Subject) -> str | None:
    return next((name for name in _model_names(subject) if name in EMBEDDING_DIMENSIONS), None)


@_ollama_serving
def probe_models_listed(subject: Subject) -> Outcome:
    wanted = [fit for fit in subject.plan.models if fit.action not in ("keep", "remove")]
    if not wanted:
        return not_applicable("the plan has no course models (models is empty)")
    # The plan was made from the host's store as it is now: a model it would still pull or
    # copy lacks blobs (or the manifest), and one it finds present carries the digest of the
    # manifest on disk, which the server must list.
    planned = {fit.name: fit.manifest_digest if fit.action == "present" else None
               for fit in wanted}
    incomplete = {fit.name: fit.reason.split(";")[0] for fit in wanted
                  if fit.action != "present"}
    result = _api(subject, "/api/tags")
    return checks.check_models_listed(_said(result), planned, incomplete)


@_ollama_serving
def probe_model_on_gpu(subject: Subject) -> Outcome:
    model = _chat_model(subject)
    if model is None:
        return not_applicable("the plan has no generative course model")
    if not subject.has_gpu:
        return not_applicable("no NVIDIA GPU")
    generated = _api(subject, "/api/generate", {"model": model, "prompt": "Hi", "stream": False,
                                                "options": {"num_predict": 1}},
                     timeout=GENERATE_TIMEOUT_S)
    if generated.rc != 0:
        return failed(f"a one-token generation with {model} failed: "
                      f"{(_said(generated)).strip()[-200:]}",
                      "`journalctl -u ollama -b`")
    ps = _api(subject, "/api/ps")
    return checks.check_model_on_gpu(_said(ps), model)


@_ollama_serving
def probe_embedding(subject: Subject) -> Outcome:
    model = _embedding_model(subject)
    if model is None:
        return not_applicable("the plan has no embedding model")
    result = _api(subject, "/api/embed", {"model": model, "input": "ready?"},
                  timeout=GENERATE_TIMEOUT_S)
    return checks.check_embedding(_said(result), model,
                                  EMBEDDING_DIMENSIONS[model])


def _vllm_off(subject: Subject) -> str | None:
    plan = subject.plan.vllm
    return None if plan.enabled else plan.reason


def _vllm_not_serving(subject: Subject) -> str | None:
    if reason := _vllm_off(subject):
        return reason
    if not subject.host.service("vllm").is_running:
        return "not checked: vllm.service is not running (see its check)"
    return None


_vllm_enabled = _only_if(_vllm_off)
_vllm_serving = _only_if(_vllm_not_serving)


def _vllm_models_request(subject: Subject, with_key: bool) -> tuple[int, str, str]:
    """``GET /v1/models`` on the host: curl's exit code, the body and the HTTP status.

    With the key, it is read on the host from the service's root-only environment file and
    handed to curl on stdin, so it appears in no command line (here or there).
    """
    url = shlex.quote(f"{subject.plan.vllm.base_url}/models")
    curl = f"curl -sS --max-time {API_TIMEOUT_S} -w '\\n%{{http_code}}' {url}"
    if with_key and subject.plan.vllm.api_key_required:
        script = (f". {vllm_lib.ENV_FILE} && printf 'Authorization: Bearer %s\\n' "
                  f'"$VLLM_API_KEY" | {curl} -H @-')
        result = subject.host.run(f"sh -c {shlex.quote(script)}")
    else:
        result = subject.host.run(curl)
    body, _, status = str(result.stdout).rpartition("\n")
    return result.rc, body or _said(result), status.strip()


@_vllm_enabled
def probe_vllm_service(subject: Subject) -> Outcome:
    return _service_state(subject, "vllm", "vllm")


@_vllm_serving
def probe_vllm_models(subject: Subject) -> Outcome:
    assert subject.plan.vllm.model is not None
    rc, body, _ = _vllm_models_request(subject, with_key=True)
    return checks.check_vllm_models(rc, body, subject.plan.vllm.model,
                                    f"{subject.plan.vllm.base_url}/models")


@_vllm_serving
def probe_vllm_key(subject: Subject) -> Outcome:
    if not subject.plan.vllm.api_key_required:
        return not_applicable(f"no vllm_api_key: vLLM listens on {subject.plan.vllm.listen_host}"
                              " only")
    _, _, status = _vllm_models_request(subject, with_key=False)
    return checks.check_vllm_key_required(status, f"{subject.plan.vllm.base_url}/models")


@dataclass(frozen=True)
class Check:
    """One question about a host, and the probe that answers it."""

    name: str
    probe: Callable[[Subject], Outcome]


REACHABLE = "Can gpulab reach the host?"
PLANNED = "Is the OS supported and the host's data plannable?"

CHECKS: tuple[Check, ...] = (
    Check(PLANNED, probe_os),
    Check("Is systemd on in WSL2?", probe_wsl_systemd),
    Check("Is WSL2 free of Linux driver packages?", probe_wsl_no_driver),
    Check("Are the planned driver packages installed?", probe_driver_packages),
    Check("Is the driver held?", probe_driver_held),
    Check("Is apt pinned to the driver branch?", probe_branch_pin),
    Check("Do unattended upgrades leave the driver alone?", probe_blacklist),
    Check("Does nvidia-smi answer with the planned branch?", probe_smi),
    Check("Are nvidia and nvidia_uvm loaded?", probe_modules),
    Check("Does the loaded module match the userspace library?", probe_module_library),
    Check("Does every installed kernel have the nvidia module?", probe_kernel_modules),
    Check("Is the planned CUDA toolkit installed?", probe_toolkit),
    Check("Does /usr/local/cuda point at it?", probe_cuda_link),
    Check("Does nvcc in a login shell match?", probe_nvcc),
    Check("Does the driver run this toolkit?", probe_driver_runs_toolkit),
    Check("Is the pinned Ollama installed?", probe_ollama_version),
    Check("Is Ollama enabled and running as ollama?", probe_ollama_service),
    Check("Does Ollama listen only where configured?", probe_ollama_listeners),
    Check("Is the Ollama firewall in place?", probe_firewall),
    Check("Does Ollama's API answer?", probe_api_version),
    Check("Are the course models pulled?", probe_models_listed),
    Check("Does a model run on the GPU?", probe_model_on_gpu),
    Check("Does the embedding model answer with the right dimension?", probe_embedding),
    Check("Is vLLM enabled and running as vllm?", probe_vllm_service),
    Check("Does vLLM serve the planned model?", probe_vllm_models),
    Check("Does vLLM refuse requests without the key?", probe_vllm_key),
)
CHECK_NAMES: tuple[str, ...] = (REACHABLE, *(check.name for check in CHECKS))
