"""The real driver, reboot and CUDA deploys against recorded machines: exact packages, pins.

Each test runs ``nvidia_driver()``, ``reboot_if_needed()`` and ``cuda_toolkit()`` for one
``@fake`` host whose gpulab facts are a recorded ``gpulab facts`` file, and reads back every
command pyinfra would run and every file it would upload. Bad data must stop the deploy
before its first operation, with the host and the data key named.
"""

from __future__ import annotations

import re

import pytest
from pyinfra.context import ctx_state

from gpulab.deploys.context import GpulabDataError
from gpulab.deploys.cuda import cuda_toolkit
from gpulab.deploys.nvidia import nvidia_driver
from gpulab.deploys.reboot import reboot_if_needed
from tests.plan.harness import PlannedHost, plan_deploy

pytestmark = pytest.mark.plan

REPO = "https://developer.download.nvidia.com/compute/cuda/repos"
INSTALL = (
    'DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::="--force-confdef" '
    '-o Dpkg::Options::="--force-confold" install '
)
TOOLKIT_INSTALL = INSTALL + "--allow-downgrades "
FORBIDDEN_CUDA = re.compile(r"\s(cuda|cuda-\d+-\d+|cuda-drivers(-\d+)?|cuda-runtime-\S+)(\s|$)")
DRIVER_WORDS = ("nvidia-driver", "nvidia-open", "cuda-drivers", "nvidia-dkms", "linux-modules")
KERNEL_METAS = ["linux-generic", "linux-image-generic", "linux-headers-generic"]
SET_QUERY = ("dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' 2>/dev/null | "
             "awk '$1 == \"ii\" && $3 ~ /^580[.]/ && $2 ~ /^(lib)?nvidia-|^cuda-drivers"
             "|^xserver-xorg-video-nvidia|^firmware-nvidia/ { print $2 }'")


def stack() -> None:
    """What deploy/gpu_host.py runs for the GPU part, in its order."""
    nvidia_driver()
    reboot_if_needed()
    cuda_toolkit()


def run(facts: str, **data: object) -> PlannedHost:
    return plan_deploy(stack, facts, data)


def installs(planned: PlannedHost) -> list[str]:
    """Every ``apt-get install`` command line, in order."""
    return [
        c for op in planned.ops for c in op.commands
        if c.startswith("DEBIAN_FRONTEND=") and " install " in c and not c.endswith(" -f")
    ]


def toolkit_ops(planned: PlannedHost, version: str, package: str, distro: str) -> None:
    """The toolkit part every GPU host gets: pin, keyring, source, install, PATH, alternative."""
    series = version.rsplit(".", 1)[0]
    pin = planned.op(f"apt pin: {package}").text
    assert f"upload /etc/apt/preferences.d/gpulab-{package}\n" in pin
    assert f"Package: {package}\nPin: version {version}-*\nPin-Priority: 1001\n" in pin
    keyring = planned.op("cuda-keyring from").text
    assert f"{REPO}/{distro}/x86_64/cuda-keyring_1.1-1_all.deb" in keyring
    assert "/var/cache/gpulab/cuda-keyring_1.1-1_all.deb" in keyring
    assert "dpkg --force-confdef --force-confold -i /var/cache/gpulab/cuda-keyring_1.1-1_all.deb" \
        in planned.op("cuda-keyring (NVIDIA's signing key)").text
    source = planned.op("NVIDIA CUDA repository").text
    assert (f"upload /etc/apt/sources.list.d/cuda-{distro}-x86_64.list\n"
            f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
            f"{REPO}/{distro}/x86_64/ /\n") in source
    assert planned.op(f"CUDA {version}: {package}").commands == (TOOLKIT_INSTALL + package,)
    profile = planned.op("PATH: /usr/local/cuda/bin").text
    assert "upload /etc/profile.d/gpulab-cuda.sh" in profile
    assert 'export PATH="/usr/local/cuda/bin${PATH:+:${PATH}}"' in profile
    assert planned.op(f"/usr/local/cuda is CUDA {version}").commands == (
        f"update-alternatives --set cuda /usr/local/cuda-{series}",
    )
    # Never a package that brings a driver along with the toolkit.
    for line in installs(planned):
        assert not FORBIDDEN_CUDA.search(line), line


def held_and_blacklisted(planned: PlannedHost, packages: list[str]) -> None:
    assert planned.op("hold ").commands == (f"apt-mark hold {' '.join(packages)}",)
    blacklist = planned.op("unattended-upgrades leaves the driver alone").text
    assert "upload /etc/apt/apt.conf.d/51gpulab-nvidia-blacklist" in blacklist
    for name in packages:
        assert f'    "^{name.replace(".", "[.]")}$";' in blacklist
    assert '    "nvidia-";' in blacklist and '    "libnvidia-";' in blacklist


def test_ubuntu2204_rtx3070_gets_prebuilt_signed_open_580_and_cuda_13_0() -> None:
    planned = run("ubuntu2204-rtx3070.json")
    driver = ["linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open"]
    # Secure Boot is on: Canonical's signed prebuilt modules, no DKMS, no headers.
    assert installs(planned)[0] == INSTALL + " ".join(driver)
    assert not any("linux-headers" in line for line in installs(planned))
    assert "nvidia-dkms" not in planned.text
    # The modules meta is built for one kernel ABI: the kernel flavour metas are held with it.
    held_and_blacklisted(planned, driver + KERNEL_METAS)
    # The driver comes from Ubuntu's archive: the NVIDIA repository only for the toolkit.
    assert planned.names().index("NVIDIA driver | hold linux-modules-nvidia-580-open-generic "
                                 "nvidia-driver-580-open linux-generic linux-image-generic "
                                 "linux-headers-generic") < planned.names().index(
        next(n for n in planned.names() if "cuda-keyring from" in n))
    toolkit_ops(planned, "13.0.0", "cuda-toolkit-13-0", "ubuntu2204")
    assert installs(planned)[-1] == TOOLKIT_INSTALL + "cuda-toolkit-13-0"


def test_ubuntu2204_dkms_under_secure_boot_stops_before_any_change() -> None:
    with pytest.raises(GpulabDataError) as error:
        run("ubuntu2204-rtx3070.json", driver_dkms=True)
    assert "@fake/ubuntu2204-rtx3070: driver_secure_boot_proceed:" in str(error.value)
    assert "mokutil --import" in str(error.value)
    assert ctx_state.get().get_op_order() == []


def test_ubuntu2204_dkms_with_proceed_installs_headers_first() -> None:
    planned = run("ubuntu2204-rtx3070.json", driver_dkms=True, driver_secure_boot_proceed=True)
    assert installs(planned)[:2] == [
        INSTALL + "linux-headers-5.15.0-161-generic linux-headers-generic",
        INSTALL + "nvidia-dkms-580-open nvidia-driver-580-open",
    ]


def test_ubuntu2404_rtx5090_gets_open_modules() -> None:
    planned = run("ubuntu2404-rtx5090.json")
    driver = ["linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open"]
    assert installs(planned)[0] == INSTALL + " ".join(driver)
    assert "Blackwell GPU: branch 580 open from ubuntu" in planned.op("NVIDIA driver: ").name
    held_and_blacklisted(planned, driver + KERNEL_METAS)
    toolkit_ops(planned, "13.0.0", "cuda-toolkit-13-0", "ubuntu2404")


def test_ubuntu2404_rtx5090_from_nvidia_repo_590_pins_the_branch_first() -> None:
    planned = run("ubuntu2404-rtx5090.json", driver_source="cuda-repo", driver_branch=590)
    assert installs(planned)[:2] == [
        INSTALL + "linux-headers-6.8.0-90-generic linux-headers-generic nvidia-driver-pinning-590",
        INSTALL + "nvidia-open",
    ]
    held_and_blacklisted(planned, ["nvidia-driver-pinning-590", "nvidia-open"])
    # NVIDIA's pinning package keeps the branch; gpulab's own pin is not written.
    assert "Pin: version 590" not in planned.text
    # The repository is set up (once for the driver) before the driver install.
    names = planned.names()
    keyring = next(i for i, n in enumerate(names) if "cuda-keyring from" in n)
    assert keyring < next(i for i, n in enumerate(names) if "before the driver" in n)
    assert planned.op("apt lists for NVIDIA's repository").commands == ("apt-get update",)


def test_ubuntu2404_rtx5090_from_nvidia_repo_580_uses_the_branch_meta_package() -> None:
    planned = run("ubuntu2404-rtx5090.json", driver_source="cuda-repo")
    assert installs(planned)[:2] == [
        INSTALL + "linux-headers-6.8.0-90-generic linux-headers-generic",
        INSTALL + "nvidia-open-580",
    ]
    assert not any("nvidia-driver-pinning" in line for line in installs(planned))
    # The repository's unsuffixed nvidia-driver spans branches: gpulab pins it to 580.
    pin = planned.op("apt pin: NVIDIA driver packages stay in branch 580").text
    assert "upload /etc/apt/preferences.d/gpulab-nvidia-driver-branch" in pin
    assert ("Package: nvidia-* libnvidia-* xserver-xorg-video-nvidia* cuda-drivers "
            "cuda-drivers-*\nPin: version 580.*\nPin-Priority: 1000\n") in pin


def test_wsl2_gets_only_the_toolkit_from_wsl_ubuntu() -> None:
    planned = run("wsl2-566.json")
    assert planned.op("NVIDIA driver: none").commands == ()
    assert "WSL2: the Windows driver provides the GPU" in planned.op("NVIDIA driver: none").name
    for line in installs(planned):
        assert not any(word in line for word in DRIVER_WORDS), line
    assert installs(planned) == [TOOLKIT_INSTALL + "cuda-toolkit-12-6"]
    # Windows driver 566.36 runs 12.6.3 (Table 3, Windows column: >= 561.17).
    toolkit_ops(planned, "12.6.3", "cuda-toolkit-12-6", "wsl-ubuntu")
    refuse = planned.op("WSL2: apt refuses Linux driver packages").text
    assert "Pin-Priority: -1" in refuse
    assert "cuda|cuda-[0-9]+-[0-9]+|cuda-drivers" in refuse
    reboot = planned.op("reboot: never on WSL2")
    assert reboot.commands == ()
    assert "reboot" not in " ".join(c for op in planned.ops for c in op.commands)


def test_wsl2_with_a_driver_requested_stops_before_any_change() -> None:
    with pytest.raises(GpulabDataError) as error:
        run("wsl2-566.json", driver_source="ubuntu")
    assert "@fake/wsl2-566: driver_source: WSL2 uses the Windows driver" in str(error.value)
    assert ctx_state.get().get_op_order() == []


DEBIAN_SOURCES = {
    "/etc/apt/sources.list": (
        "==> /etc/apt/sources.list\n"
        "deb http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian bookworm-updates main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
    ),
}


def test_debian12_gtx1650_default_gets_nvidias_580_and_cuda_13_0_from_debian12() -> None:
    planned = run("debian12-gtx1650.json")
    assert installs(planned)[:2] == [INSTALL + "linux-headers-amd64", INSTALL + "nvidia-open-580"]
    held_and_blacklisted(planned, ["nvidia-open-580"])
    # nvidia-open-580 depends with ">=" on nvidia-driver, nvidia-kernel-dkms...: all held.
    assert planned.op("hold every installed package of branch 580").commands == (
        f'names=$({SET_QUERY}); [ -z "$names" ] || apt-mark hold $names',
    )
    toolkit_ops(planned, "13.0.0", "cuda-toolkit-13-0", "debian12")


def test_debian12_gtx1650_debians_own_driver_gets_no_toolkit() -> None:
    planned = plan_deploy(stack, "debian12-gtx1650.json", {"driver_source": "debian"},
                          fake_responses={"for f in /etc/apt/sources.list": DEBIAN_SOURCES[
                              "/etc/apt/sources.list"].splitlines()})
    sources = planned.op("Debian sources: main contrib non-free non-free-firmware").text
    assert (
        "upload /etc/apt/sources.list\n"
        "deb http://mirror.example/debian bookworm main contrib non-free non-free-firmware\n"
        "deb http://mirror.example/debian bookworm-updates main contrib non-free "
        "non-free-firmware\n"
        "deb http://security.example/debian-security bookworm-security main contrib non-free "
        "non-free-firmware\n"
    ) in sources
    assert planned.op("apt lists for the added components").commands == ("apt-get update",)
    assert installs(planned)[:2] == [INSTALL + "linux-headers-amd64", INSTALL + "nvidia-driver"]
    held_and_blacklisted(planned, ["nvidia-driver", "nvidia-kernel-dkms"])
    pin = planned.op("apt pin: NVIDIA driver packages stay in branch 535").text
    assert "Package: nvidia-* libnvidia-*" in pin and "Pin: version 535.*" in pin
    # Debian's 535 runs CUDA 12.2 at most; NVIDIA's debian12 repository starts at 12.3.
    none = planned.op("CUDA toolkit: none")
    assert none.commands == ()
    assert "debian12 repository starts at CUDA 12.3" in none.name
    assert "cuda-keyring" not in planned.text


def test_ubuntu2404_pascal_is_capped_at_580_proprietary() -> None:
    planned = run("ubuntu2404-pascal.json")
    driver = ["linux-modules-nvidia-580-generic", "nvidia-driver-580"]
    assert installs(planned)[0] == INSTALL + " ".join(driver)
    assert "-open" not in installs(planned)[0]
    held_and_blacklisted(planned, driver + KERNEL_METAS)
    # CUDA 13 dropped Pascal: the newest 12.x that branch 580 runs.
    toolkit_ops(planned, "12.9.1", "cuda-toolkit-12-9", "ubuntu2404")
    assert "13-0" not in planned.text


def test_no_gpu_installs_nothing_and_says_why() -> None:
    planned = run("debian12-nogpu.json")
    assert installs(planned) == []
    assert "no NVIDIA GPU found" in planned.op("NVIDIA driver: none").name
    assert "CUDA toolkit: none" in planned.names()[-1]
    assert all(op.commands == () for op in planned.ops)


def test_reboot_allowed_reboots_after_the_driver_and_checks_it() -> None:
    planned = run("ubuntu2404-rtx5090.json", reboot_allowed=True, reboot_batch=3)
    reboot = planned.op("reboot for the driver").text
    assert "( sleep 1 && reboot ) </dev/null >/dev/null 2>&1 &" in reboot
    assert "check_driver_loads" in planned.op("the NVIDIA driver loads after the reboot").text
    names = planned.names()
    reboot_at = next(i for i, name in enumerate(names) if "| reboot for the driver" in name)
    assert names[reboot_at + 1].endswith("| the NVIDIA driver loads after the reboot")


def test_driver_upgrade_lifts_the_hold_upgrades_and_holds_again() -> None:
    planned = plan_deploy(stack, "ubuntu2404-rtx5090.json", {"driver_upgrade": True},
                          fake_responses={"apt list --upgradable": [
                              "nvidia-driver-580-open/noble-updates 580.173.02-0ubuntu0.24.04.1 "
                              "amd64 [upgradable from: 580.95.05-0ubuntu0.24.04.2]"]})
    # kernel, modules and driver move together
    names = ("linux-modules-nvidia-580-open-generic nvidia-driver-580-open linux-generic "
             "linux-image-generic linux-headers-generic")
    # held again whatever the upgrade's outcome
    assert planned.op("driver_upgrade: newest 580 release").commands == (
        f"apt-mark unhold {names} && {{ {INSTALL}--only-upgrade {names}; status=$?; "
        f"apt-mark hold {names}; exit $status; }}",
    )


@pytest.mark.parametrize(
    ("facts", "data", "field", "words"),
    [
        ("ubuntu2204-rtx3070.json", {"driver_branch": 999}, "driver_branch",
         "driver branch 999 is unknown"),
        ("ubuntu2204-rtx3070.json", {"driver_branch": 535, "cuda_toolkit": "12.6"},
         "cuda_toolkit", "CUDA 12.6.3 needs driver 560.35.05 or newer"),
        ("ubuntu2404-pascal.json", {"driver_branch": 590}, "driver_branch",
         "Pascal GPUs are supported up to branch 580"),
        ("ubuntu2404-rtx5090.json", {"driver_branch": 550}, "driver_branch",
         "Blackwell GPUs need branch 570 or newer"),
        ("wsl2-566.json", {"driver_source": "cuda-repo"}, "driver_source",
         "WSL2 uses the Windows driver"),
    ],
    ids=["unknown-branch", "toolkit-above-driver", "pascal-590", "blackwell-550", "wsl2-driver"],
)
def test_bad_input_stops_before_any_change(
    facts: str, data: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(GpulabDataError) as error:
        run(facts, **data)
    host = "@fake/" + facts.removesuffix(".json")
    assert f"{host}: {field}: " in str(error.value)
    assert words in str(error.value)
    assert ctx_state.get().get_op_order() == []


def test_holds_of_another_branch_are_released_but_not_the_users() -> None:
    planned = plan_deploy(stack, "ubuntu2404-rtx5090.json", fake_responses={
        "apt-mark showhold": ["nvidia-driver-535", "linux-modules-nvidia-535-generic",
                              "nvidia-container-toolkit", "nvidia-driver-580-open"],
    })
    assert planned.op("release holds of other driver branches").commands == (
        "apt-mark unhold linux-modules-nvidia-535-generic nvidia-driver-535",
    )


def test_driver_and_toolkit_share_one_repository_setup() -> None:
    planned = run("ubuntu2404-rtx5090.json", driver_source="cuda-repo")
    names = planned.names()
    assert sum(name.startswith("NVIDIA driver | cuda-keyring from") for name in names) == 1
    assert not any(name.startswith("CUDA toolkit | cuda-keyring") for name in names)
    assert sum("cuda-keyring (NVIDIA's signing key)" in name for name in names) == 1
    # the toolkit's own list refresh stays, for a toolkit the first refresh did not cover
    assert "CUDA toolkit | apt lists for NVIDIA's repository" in names


def test_kernel_hold_opt_out_holds_nothing_and_drops_the_blacklist() -> None:
    planned = run("ubuntu2404-rtx5090.json", driver_hold_kernel=False)
    assert installs(planned)[0] == INSTALL + (
        "linux-modules-nvidia-580-open-generic nvidia-driver-580-open")
    assert not any(name.endswith(tuple(f"| hold {n}" for n in KERNEL_METAS))
                   for name in planned.names())
    assert "apt-mark hold" not in planned.text
    dropped = planned.op("nothing held: no unattended-upgrades blacklist")
    assert "driver_hold_kernel: false" in dropped.name
    assert "unattended-upgrades leaves the driver alone" not in " ".join(planned.names())


def test_kernel_hold_is_released_when_the_policy_is_turned_off() -> None:
    planned = plan_deploy(stack, "ubuntu2404-rtx5090.json", {"driver_hold_kernel": False},
                          fake_responses={"apt-mark showhold": [
                              "linux-generic", "linux-image-generic", "linux-headers-generic",
                              "linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open"]})
    assert planned.op("release holds of other driver branches").commands == (
        "apt-mark unhold linux-generic linux-headers-generic linux-image-generic "
        "linux-modules-nvidia-580-open-generic nvidia-driver-580-open",
    )


def test_nvidia_repo_driver_upgrade_moves_and_reholds_the_whole_branch() -> None:
    planned = plan_deploy(stack, "ubuntu2404-rtx5090.json",
                          {"driver_source": "cuda-repo", "driver_upgrade": True},
                          fake_responses={"apt list --upgradable": [
                              "nvidia-open-580/ubuntu2404 580.126.20-1 amd64 "
                              "[upgradable from: 580.95.05-1]"]})
    names = f"nvidia-open-580 $({SET_QUERY})"
    assert planned.op("driver_upgrade: newest 580 release").commands == (
        f"apt-mark unhold {names} && {{ {INSTALL}--only-upgrade {names}; status=$?; "
        f"apt-mark hold {names}; exit $status; }}",
    )


def test_nvidia_repo_set_already_held_changes_nothing() -> None:
    installed = [f"ii  {name}  {version}  amd64  -" for name, version in (
        ("nvidia-open-580", "580.95.05-1"), ("nvidia-driver", "580.95.05-1"),
        ("nvidia-kernel-dkms", "580.95.05-1"), ("linux-headers-6.8.0-90-generic", "6.8.0-90.91"),
        ("linux-headers-generic", "6.8.0-90.91"),
        # not the driver's: another version line, never held by gpulab
        ("nvidia-container-toolkit", "1.17.8-1"))]
    planned = plan_deploy(stack, "ubuntu2404-rtx5090.json", {"driver_source": "cuda-repo"},
                          fake_responses={
                              "dpkg -l": installed,
                              "apt-mark showhold": ["nvidia-open-580", "nvidia-driver",
                                                    "nvidia-kernel-dkms"]})
    assert planned.op("hold every installed package of branch 580").commands == ()
    # the set's own names are not "another branch's" holds: a rerun releases nothing
    assert planned.op("release holds of other driver branches").commands == ()


def test_nvml_mismatch_morning_is_rebooted_and_checked_or_said_plainly() -> None:
    facts = "ubuntu2404-rtx3070-580-nvml-mismatch.json"
    # the same branch is installed: no driver change, yet the running module is stale
    reboot = run(facts, reboot_allowed=True).op("reboot for the driver")
    assert "(module 580.82.07, library 580.95.05)" in reboot.name
    assert "( sleep 1 && reboot ) </dev/null >/dev/null 2>&1 &" in reboot.text
    left = run(facts).op("reboot: left to you").name
    assert "Driver/library version mismatch" in left and "library 580.95.05" in left


def test_wsl2_refusal_pin_keeps_linux_libcuda_out() -> None:
    refuse = run("wsl2-566.json").op("WSL2: apt refuses Linux driver packages").text
    assert "|libnvidia-compute(-.*)?|nvidia-utils(-.*)?)$/" in refuse
