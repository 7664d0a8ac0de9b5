"""vLLM as a systemd service in its own virtualenv, per the host's plan (or stopped again).

The wheel (default or a CUDA variant index) is the plan's; pip installs it into
``vllm_venv`` from ``vllm_pip_index_url`` when set. The model is downloaded into the shared
``HF_HOME`` as the ``vllm`` user (``hf download`` resumes), the API key reaches the service
as ``VLLM_API_KEY`` from a root-only environment file, and the unit is rendered from
``templates/vllm/``. The service restarts only when the virtualenv, the unit, the key or the
model changed. With ``vllm_enabled: false`` the service is stopped and disabled; the
virtualenv and the model stay unless ``vllm_remove`` is set.

    from gpulab.deploys.vllm import vllm
    vllm()
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Generator, Sequence
from io import StringIO

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.server import Groups
from pyinfra.operations import apt, files, server, systemd

from gpulab.deploys.common import changed, gpulab_deploy, template
from gpulab.deploys.context import GpulabDataError, host_plan, host_settings
from gpulab.facts.files import FileText
from gpulab.plan import vllm as lib
from gpulab.plan.ollama import GPU_GROUPS, proxy_environment, systemd_quote
from gpulab.settings import Settings

_JINJA = {"trim_blocks": True, "lstrip_blocks": True}
VENV_MARKER = ".gpulab-installed"
DOWNLOADED_DIR = ".gpulab-downloaded"
# Characters that would end or split the value in a systemd environment file.
_KEY_FORBIDDEN = set(" \t\r\n\"'\\$")


def _with_environment(command: str, environment: Sequence[tuple[str, str]]) -> str:
    assignments = [shlex.quote(f"{name}={value}") for name, value in environment]
    return " ".join(["env", *assignments, command]) if assignments else command


def _marker_is(path: str, text: str) -> bool:
    return host.get_fact(FileText, path=path) == text.strip()


@operation()
def venv_installed(
    venv: str, pip_command: str, marker: str, environment: Sequence[tuple[str, str]] = ()
) -> Generator[str]:
    """A virtualenv at ``venv`` holding what ``pip_command`` installs.

    ``marker`` (the packages and their indexes) is written into the virtualenv last, so an
    interrupted install is redone and an unchanged one is not touched again.

    .. code:: python

        venv_installed(name="vLLM 0.26.0", venv="/opt/vllm",
                       pip_command="/opt/vllm/bin/pip install vllm==0.26.0",
                       marker="vllm==0.26.0 from default\\n")
    """
    marker_path = f"{venv}/{VENV_MARKER}"
    if _marker_is(marker_path, marker):
        host.noop(f"{venv} already holds {marker.strip()}")
        return
    yield f"rm -f {shlex.quote(marker_path)}"
    yield f"test -x {shlex.quote(venv)}/bin/pip || python3 -m venv {shlex.quote(venv)}"
    yield _with_environment(pip_command, environment)
    yield f"printf %s {shlex.quote(marker)} > {shlex.quote(marker_path)}"


@operation()
def model_downloaded(
    model: str, cache: str, user: str, command: str, environment: Sequence[tuple[str, str]]
) -> Generator[str]:
    """``model`` downloaded into the shared cache as ``user``, once.

    A marker under ``cache`` records a finished download; the download itself resumes
    partial files when it is run again after an interruption.

    .. code:: python

        model_downloaded(name="Qwen", model="Qwen/Qwen2.5-7B-Instruct-AWQ",
                         cache="/var/lib/vllm/huggingface", user="vllm",
                         command="/opt/vllm/bin/hf download Qwen/Qwen2.5-7B-Instruct-AWQ",
                         environment=[("HF_HOME", "/var/lib/vllm/huggingface")])
    """
    marker = f"{cache}/{DOWNLOADED_DIR}/{model.replace('/', '--')}"
    if _marker_is(marker, model + "\n"):
        host.noop(f"{model} is already in {cache}")
        return
    yield f"runuser -u {shlex.quote(user)} -- {_with_environment(command, environment)}"
    yield f"install -d -m 755 {shlex.quote(os.path.dirname(marker))}"
    yield f"printf '%s\\n' {shlex.quote(model)} > {shlex.quote(marker)}"


def _api_key(settings: Settings) -> str | None:
    try:
        key = lib.resolve_api_key(settings, os.environ)
    except lib.VllmRefused as refused:
        raise GpulabDataError(f"{host.name}: {refused}\nnothing was changed") from None
    if key is not None and (not key or _KEY_FORBIDDEN & set(key)):
        raise GpulabDataError(
            f"{host.name}: vllm_api_key: use a key without spaces, quotes, backslashes or $ "
            "(e.g. `openssl rand -hex 24`)\nnothing was changed"
        )
    return key


def _present(settings: Settings, plan: lib.VllmPlan) -> None:
    key = _api_key(settings)
    apt.packages(
        name="vLLM's tools", packages=["ca-certificates", "python3-venv"], no_recommends=True,
        update=True, cache_time=settings.apt_cache_time,
    )
    server.group(name="vllm group", group=lib.USER, system=True)
    existing = host.get_fact(Groups) or []
    server.user(
        name="vllm user", user=lib.USER, system=True, home=lib.HOME, shell="/bin/false",
        group=lib.USER, groups=[g for g in GPU_GROUPS if g in existing], append=True,
        create_home=True,
    )
    files.directory(name="vLLM cache directory", path=settings.vllm_hf_home, user=lib.USER,
                    group=lib.USER, mode="755")

    packages = lib.venv_packages(plan, settings.vllm_hub)
    venv_op = venv_installed(
        name=f"vLLM virtualenv {settings.vllm_venv}: {' '.join(packages)}",
        venv=settings.vllm_venv, pip_command=lib.pip_install_command(
            settings.vllm_venv, plan, packages),
        marker=lib.venv_marker(plan, packages),
        environment=proxy_environment(settings),
    )
    environment = lib.model_environment(settings)
    changes = [venv_op]
    assert plan.model is not None
    if settings.vllm_model_download:
        changes.append(model_downloaded(
            name=f"vLLM model {plan.model} ({settings.vllm_hub})", model=plan.model,
            cache=settings.vllm_hf_home, user=lib.USER,
            command=lib.download_command(settings.vllm_venv, plan.model, settings.vllm_hub),
            environment=environment,
        ))

    files.directory(name="gpulab config directory", path="/etc/gpulab", mode="755")
    if key is not None:
        env_op = files.put(
            name=f"vLLM API key ({lib.ENV_FILE}, root only)",
            src=StringIO(f"VLLM_API_KEY={key}\n"), dest=lib.ENV_FILE, user="root",
            group="root", mode="600",
        )
    else:
        env_op = files.file(name=f"no {lib.ENV_FILE}", path=lib.ENV_FILE, present=False)
    unit_op = files.template(
        name="vLLM unit", src=template("vllm/vllm.service.j2"), dest=lib.UNIT_PATH, mode="644",
        version=plan.version, model=plan.model, service_user=lib.USER,
        venv=settings.vllm_venv, after_ollama=plan.shares_gpu_with_ollama,
        environment=[systemd_quote(name, value) for name, value in environment],
        env_file=lib.ENV_FILE if key is not None else None,
        arguments=" ".join(shlex.quote(word) for word in lib.serve_arguments(plan)),
        jinja_env_kwargs=dict(_JINJA),
    )
    systemd.service(
        name="vLLM restarted (virtualenv, unit, key or model changed)", service=lib.SERVICE,
        running=True, restarted=True, daemon_reload=True,
        _if=changed(*changes, env_op, unit_op),
    )
    systemd.service(name="vLLM running and enabled", service=lib.SERVICE, running=True,
                    enabled=True)


def _disabled(settings: Settings, plan: lib.VllmPlan) -> None:
    if plan.service_can_run:
        systemd.service(name="vLLM stopped and disabled", service=lib.SERVICE, running=False,
                        enabled=False)
    unit_op = files.file(name=f"no {lib.UNIT_PATH}", path=lib.UNIT_PATH, present=False)
    files.file(name=f"no {lib.ENV_FILE}", path=lib.ENV_FILE, present=False)
    if plan.service_can_run:
        systemd.daemon_reload(name="systemd reloaded", _if=changed(unit_op))
    if plan.remove:
        files.directory(name=f"no {settings.vllm_venv}", path=settings.vllm_venv,
                        present=False)
        files.directory(name=f"no {settings.vllm_hf_home}", path=settings.vllm_hf_home,
                        present=False)
        server.user(name="no vllm user", user=lib.USER, present=False)
        server.group(name="no vllm group", group=lib.USER, present=False)


@gpulab_deploy("gpulab vLLM")
def vllm() -> None:
    """vLLM per the host's plan: installed and serving its model, or stopped."""
    settings = host_settings(host)
    plan = host_plan(host).vllm
    if plan.enabled:
        _present(settings, plan)
    else:
        _disabled(settings, plan)
