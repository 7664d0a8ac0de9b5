"""The whole stack as the test subject: deploy/gpu_host.py on a guest, then ``gpulab verify``.

One guest (``lab-02``, the suite's scratch guest) gets the whole stack with every upstream
replaced by its stand-in through the same data keys: NVIDIA's repository
(``nvidia_repo_base``), Ollama's release archive (``ollama_download_base``) and the model
registry, from which the instructor's store is fetched once with the real client; the course
models are the defaults (``models`` unset), distributed ``seeded`` from that store. Its gpulab facts
are a recorded Debian 12 + GTX 1650 host (``gpulab_stand_in_facts``), so the plan installs
the 580 open driver and CUDA 13.0 from the stand-in repository; the guest has no GPU on its
PCI bus, so the GPU checks are n/a "no NVIDIA GPU". ``reboot_allowed`` stays false: the
stand-in driver loads no module and a reboot would prove nothing here.

Then one thing is broken at a time, from one provisioned state, and only the matching check
fails (exit 1); every break is undone before the next. Last, lab-01 is stopped: exit 2 names
it, lab-02 is still verified. lab-02 is handed back clean (its saved boot) at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpulab.models.catalog import EMBEDDING_DIMENSIONS
from gpulab.models.names import parse_model_name
from gpulab.models.registry import RegistryClient
from gpulab.models.store import Store
from gpulab.settings import Settings
from tests.fixtures.http_server import StaticServer
from tests.fixtures.nvidia_repo import build_repo
from tests.fixtures.ollama_registry import RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import FleetUnderTest, inventory_with
from tests.integration.outcomes import Verdict, assert_ready, assert_unchanged, verify
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests/plan/facts/debian12-gtx1650.json"
GUEST, OTHER = "lab-02", "lab-01"
OLLAMA = "0.33.0"  # not in gpulab's checksum table: the release's sha256sum.txt verifies it
CHAT_MODEL, EMBEDDING_MODEL = Settings().models  # the course's defaults
BLOBS = "/usr/share/ollama/.ollama/models/blobs"


@dataclass
class Stack:
    fleet: FleetUnderTest
    inventory: Path

    def sh(self, command: str) -> str:
        rc, out = self.fleet.ssh(GUEST, command, timeout=120)
        assert rc == 0, f"{command}: rc={rc}\n{out}"
        return out

    def deploy(self, label: str) -> PyinfraResult:
        result = run_pyinfra(self.inventory, REPO / "deploy/gpu_host.py", limit=GUEST,
                             cwd=REPO, timeout=1800)
        record_phase(f"whole stack: {label} (rc {result.rc})", result.seconds)
        return result

    def verify(self, label: str, *args: str) -> Verdict:
        return verify(self.inventory, *args, label=label)


@pytest.fixture(scope="module")
def stack(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("whole-stack")
    with StaticServer(tmp / "www") as server, RegistryStandIn(tmp / "registry") as registry:
        build_repo(server.root, "debian12", server.guest_url)
        build_release(server.root, OLLAMA)
        # The chat model is the larger one: the blob-deleting break takes the largest blob.
        registry.publish(CHAT_MODEL, payload_bytes=2 << 20)
        registry.publish(EMBEDDING_MODEL, payload_bytes=1 << 20, architecture="bert",
                         embedding_length=EMBEDDING_DIMENSIONS[EMBEDDING_MODEL], pooling=True)
        store = tmp / "store"
        for model in (CHAT_MODEL, EMBEDDING_MODEL):
            RegistryClient().fetch(Store(store), parse_model_name(model), registry.url)
        facts = json.loads(RECORDED.read_text())
        facts["facts"]["kernel"] = fleet.image.kernel_version
        facts_file = tmp / f"facts-{GUEST}.json"
        facts_file.write_text(json.dumps(facts, indent=2))
        room = {"nvidia_repo_base": server.guest_url, "driver_source": "cuda-repo",
                "ollama_download_base": server.guest_url, "ollama_version": OLLAMA,
                "models_distribution": "seeded", "models_store": str(store)}
        inventory = inventory_with(fleet, room, tmp / "inventory_room.py",
                                   {GUEST: {"gpulab_stand_in_facts": str(facts_file)}})
        try:
            yield Stack(fleet, inventory)
        finally:
            fleet.hand_back_clean(GUEST, "whole stack")


def test_whole_stack_deploys_reruns_unchanged_and_verifies_ready(stack: Stack) -> None:
    first = stack.deploy("first run")
    assert first.rc == 0, first.describe()
    assert GUEST in first.changed_hosts, first.describe()
    assert_unchanged(stack.deploy("rerun (must be no-op)"), [GUEST])

    verdict = stack.verify("after the whole stack", "--limit", GUEST)
    assert_ready(verdict, [GUEST])
    checks = verdict.hosts[GUEST]
    for name in ("Does nvidia-smi answer with the planned branch?",
                 "Are nvidia and nvidia_uvm loaded?",
                 "Does the loaded module match the userspace library?"):
        assert checks[name] == ("n/a", "no NVIDIA GPU on this host"), name
    for name in ("Are the planned driver packages installed?", "Is the driver held?",
                 "Is apt pinned to the driver branch?",
                 "Do unattended upgrades leave the driver alone?",
                 "Is the planned CUDA toolkit installed?", "Does /usr/local/cuda point at it?",
                 "Does nvcc in a login shell match?", "Is the pinned Ollama installed?",
                 "Is Ollama enabled and running as ollama?",
                 "Does Ollama listen only where configured?", "Does Ollama's API answer?"):
        assert checks[name][0] == "pass", (name, checks[name])
    assert "nvidia-open-580" in checks["Is the driver held?"][1]
    assert checks["Is the planned CUDA toolkit installed?"][1].startswith("CUDA 13.0.0")
    assert checks["Are the course models pulled?"] == (
        "pass", f"2 model(s) listed, complete on disk: {CHAT_MODEL}, {EMBEDDING_MODEL}")
    assert checks["Does the embedding model answer with the right dimension?"] == (
        "pass", f"{EMBEDDING_MODEL}: 1024-dimensional vectors")
    assert checks["Does a model run on the GPU?"] == ("n/a", "no NVIDIA GPU")
    for name in ("Is vLLM enabled and running as vllm?", "Does vLLM serve the planned model?",
                 "Does vLLM refuse requests without the key?"):
        assert checks[name] == ("n/a", "vllm_enabled is false"), name


BREAKS = [
    pytest.param("systemctl stop ollama", "systemctl start ollama",
                 "Is Ollama enabled and running as ollama?", "not running", id="ollama-stopped"),
    pytest.param(
        "mkdir -p /etc/systemd/system/ollama.service.d && printf '[Service]\\nEnvironment="
        "OLLAMA_HOST=0.0.0.0:11434\\n' > /etc/systemd/system/ollama.service.d/zz-open.conf"
        " && systemctl daemon-reload && systemctl restart ollama && sleep 3",
        "rm /etc/systemd/system/ollama.service.d/zz-open.conf && systemctl daemon-reload"
        " && systemctl restart ollama && sleep 3",
        "Does Ollama listen only where configured?", "0.0.0.0:11434", id="ollama-open-to-lan"),
    pytest.param("ln -sfn /opt /usr/local/cuda", "ln -sfn /etc/alternatives/cuda /usr/local/cuda",
                 "Does /usr/local/cuda point at it?", "points at /opt", id="cuda-link-elsewhere"),
    pytest.param("apt-mark unhold nvidia-open-580", "apt-mark hold nvidia-open-580",
                 "Is the driver held?", "apt-mark hold nvidia-open-580", id="driver-unheld"),
    # Ollama still lists a model whose blob is gone: only gpulab's look at the store sees it.
    pytest.param(f"cd {BLOBS} && ls -S | head -n 1 > /root/held-blob.name"
                 " && mv \"$(cat /root/held-blob.name)\" /root/held-blob",
                 f"mv /root/held-blob {BLOBS}/\"$(cat /root/held-blob.name)\"",
                 "Are the course models pulled?", f"incomplete on disk: {CHAT_MODEL}",
                 id="model-blob-deleted"),
]


@pytest.mark.parametrize("break_it, undo, check, cause", BREAKS)
def test_one_break_fails_that_check_alone(stack: Stack, break_it: str, undo: str, check: str,
                                          cause: str) -> None:
    stack.sh(break_it)
    try:
        verdict = stack.verify(f"broken: {check}", "--limit", GUEST)
    finally:
        stack.sh(undo)
    assert verdict.rc == 1, verdict.describe()
    assert list(verdict.failing(GUEST)) == [check], verdict.describe()
    message = verdict.failing(GUEST)[check]
    assert cause in message and "Fix:" in message, message
    assert verdict.ready[GUEST] is False


def test_stopped_guest_is_exit_2_named_and_the_other_still_verified(stack: Stack) -> None:
    stack.fleet.save_running(OTHER, "before the stop", stop=True)
    try:
        verdict = stack.verify("lab-01 stopped")
    finally:
        with timed(f"whole stack: resume {OTHER} as it was"):
            stack.fleet.resume(OTHER, "before the stop")
    assert verdict.rc == 2, verdict.describe()
    reach = verdict.hosts[OTHER]["Can gpulab reach the host?"]
    assert reach[0] == "fail" and f"{OTHER} could not be reached" in reach[1]
    assert verdict.failing(GUEST) == {}, verdict.describe()
    assert verdict.ready == {OTHER: False, GUEST: True}
