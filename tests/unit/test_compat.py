"""The compatibility tables and their lookups, at every row's boundary."""

from __future__ import annotations

import itertools

import pytest

from gpulab.compat.cuda import (
    CompatError,
    NotInRepository,
    check_pinned_toolkit,
    choose_toolkit,
    find_release,
    minor_version_floor,
    repo_carries,
)
from gpulab.compat.gpus import (
    GpuRuleError,
    check_branch,
    check_flavour,
    choose_flavour,
    family_by_name,
    family_of_name,
    family_of_pci,
    newest_branch_for,
)
from gpulab.compat.tables import CUDA_TOOLKITS, DEVICE_ID_RANGES, ToolkitRow
from gpulab.compat.versions import VersionError, parse_version
from gpulab.facts.nvidia import parse_nvidia_smi_query
from gpulab.facts.pci import parse_lspci_nn
from tests.recorded import recorded

pytestmark = pytest.mark.unit

PLATFORMS = ("linux", "windows")


def _below(version: str) -> str:
    parts = list(parse_version(version))
    index = max(i for i, part in enumerate(parts) if part > 0)
    parts[index] -= 1
    for later in range(index + 1, len(parts)):
        parts[later] = 999
    return ".".join(str(part) for part in parts)


def _above(version: str) -> str:
    parts = list(parse_version(version))
    parts[-1] += 1
    return ".".join(str(part) for part in parts)


def _rows(platform: str) -> list[tuple[ToolkitRow, str]]:
    rows = []
    for row in CUDA_TOOLKITS:
        minimum = row.linux_min if platform == "linux" else row.windows_min
        if minimum is not None:
            rows.append((row, minimum))
    return rows


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_row_is_chosen_at_its_minimum_and_not_below(platform: str) -> None:
    for row, minimum in _rows(platform):
        at = choose_toolkit(minimum, platform)  # type: ignore[arg-type]
        assert at.min_driver == minimum
        assert parse_version(at.version) >= parse_version(row.version), (row, at)
        above = choose_toolkit(_above(minimum), platform)  # type: ignore[arg-type]
        assert parse_version(above.version) >= parse_version(row.version)
        oldest = row == _rows(platform)[-1][0]
        if oldest:
            with pytest.raises(CompatError, match="older than every CUDA toolkit"):
                choose_toolkit(_below(minimum), platform)  # type: ignore[arg-type]
        else:
            below = choose_toolkit(_below(minimum), platform)  # type: ignore[arg-type]
            assert parse_version(below.version) < parse_version(row.version), (row, below)


@pytest.mark.parametrize(
    ("driver", "platform", "toolkit", "package"),
    [
        ("560.35.03", "linux", "12.6.2", "cuda-toolkit-12-6"),  # exact to the update
        ("560.35.04", "linux", "12.6.2", "cuda-toolkit-12-6"),
        ("560.35.05", "linux", "12.6.3", "cuda-toolkit-12-6"),
        ("570.26", "linux", "12.8.0", "cuda-toolkit-12-8"),
        ("570.124.06", "linux", "12.8.1", "cuda-toolkit-12-8"),
        ("580.65.06", "linux", "13.0.0", "cuda-toolkit-13-0"),
        ("595.71.05", "linux", "13.2.2", "cuda-toolkit-13-2"),
        ("999.1", "linux", "13.2.2", "cuda-toolkit-13-2"),
        ("566.36", "windows", "12.6.3", "cuda-toolkit-12-6"),  # WSL2: Windows numbering
        ("560.94", "windows", "12.6.2", "cuda-toolkit-12-6"),
        ("610.88", "windows", "12.9.1", "cuda-toolkit-12-9"),  # 13.x: N/A for Windows
    ],
)
def test_choose_toolkit_examples(driver: str, platform: str, toolkit: str, package: str) -> None:
    chosen = choose_toolkit(driver, platform)  # type: ignore[arg-type]
    assert (chosen.version, chosen.package) == (toolkit, package)
    assert chosen.apt_version == f"{toolkit}-*"
    assert chosen.prefix == f"/usr/local/cuda-{'.'.join(toolkit.split('.')[:2])}"


def test_windows_numbering_differs_from_linux() -> None:
    # The same number is a different release in each column: they must never be mixed.
    assert choose_toolkit("560.76", "windows").version == "12.6.0"
    assert choose_toolkit("560.76", "linux").version == "12.6.3"


def test_max_major_caps_the_choice() -> None:
    assert choose_toolkit("580.95.05", "linux", max_major=12).version == "12.9.1"
    with pytest.raises(CompatError, match=r"last CUDA is 12\.x"):
        check_pinned_toolkit("13.0", "580.95.05", "linux", max_major=12)


def test_driver_below_every_row_is_a_clear_error() -> None:
    with pytest.raises(CompatError, match="upgrade the driver"):
        choose_toolkit("470.256.02")


def test_bad_version_text() -> None:
    with pytest.raises(VersionError):
        choose_toolkit("latest")


def test_pinned_toolkit_above_the_driver_is_refused_with_advice() -> None:
    with pytest.raises(CompatError, match=r"needs driver 570\.26 .* pin 12\.6\.3 or older"):
        check_pinned_toolkit("12.8.0", "560.35.05", "linux")
    assert check_pinned_toolkit("12.6", "560.35.05", "linux").version == "12.6.3"
    assert check_pinned_toolkit("12.6.1", "560.35.05", "linux").version == "12.6.1"


def test_pinned_13_on_windows_uses_the_minor_version_floor() -> None:
    assert check_pinned_toolkit("13.0.0", "581.15", "windows").min_driver == "580"
    with pytest.raises(CompatError):
        check_pinned_toolkit("13.0.0", "576.57", "windows")


def test_find_release() -> None:
    assert find_release("12.6").version == "12.6.3"
    assert find_release("12.6.1").version == "12.6.1"
    with pytest.raises(CompatError, match="not in gpulab's table"):
        find_release("12.7")


@pytest.mark.parametrize(
    ("repo", "first"),
    [("ubuntu2204", "11.8.0"), ("ubuntu2404", "12.5.0"), ("debian12", "12.3.0"),
     ("wsl-ubuntu", "11.8.0")],
)
def test_each_repository_carries_releases_from_its_first(repo: str, first: str) -> None:
    carried = [row.version for row in CUDA_TOOLKITS if repo_carries(repo, row.version)]
    assert carried[-1] == first and carried[0] == CUDA_TOOLKITS[0].version


def test_the_choice_is_what_the_driver_runs_and_the_repository_has() -> None:
    assert choose_toolkit("550.54.14", repo="ubuntu2204").version == "12.4.0"
    with pytest.raises(NotInRepository, match=r"ubuntu2404 repository starts at CUDA 12\.5"):
        choose_toolkit("550.54.14", repo="ubuntu2404")
    with pytest.raises(NotInRepository, match=r"debian12 repository starts at CUDA 12\.3"):
        choose_toolkit("535.54.03", repo="debian12")
    assert choose_toolkit("580.65.06", repo="debian12").version == "13.0.0"
    with pytest.raises(NotInRepository, match=r"has no CUDA 12\.4\.1"):
        check_pinned_toolkit("12.4", "580.65.06", "linux", repo="ubuntu2404")


def test_minor_version_floors() -> None:
    assert minor_version_floor(12, "linux") == "525.60.13"
    assert minor_version_floor(12, "windows") == "527.41"
    assert minor_version_floor(13, "linux") == "580.65.06"
    with pytest.raises(CompatError):
        minor_version_floor(10, "linux")


@pytest.mark.parametrize(
    ("device_id", "lspci_name", "family"),
    [
        ("2b85", "GB202 [GeForce RTX 5090]", "Blackwell"),
        ("2204", "GA102 [GeForce RTX 3090]", "Ampere"),
        ("2484", "GA104 [GeForce RTX 3070]", "Ampere"),
        ("2684", "AD102 [GeForce RTX 4090]", "Ada"),
        ("2330", "GH100 [H100 SXM5 80GB]", "Hopper"),
        ("1f82", "TU117 [GeForce GTX 1650]", "Turing"),
        ("1b06", "GP102 [GeForce GTX 1080 Ti]", "Pascal"),
        ("1db4", "GV100GL [Tesla V100 PCIe 16GB]", "Volta"),
        ("13c2", "GM204 [GeForce GTX 970]", "Maxwell"),
        # no chip name (old pci.ids): the device id decides
        ("2b85", "Device 2b85", "Blackwell"),
        ("2504", "Device 2504", "Ampere"),
        ("1e87", "Device 1e87", "Turing"),
        ("1c03", "Device 1c03", "Pascal"),
        ("2705", "Device 2705", "Ada"),
    ],
)
def test_family_of_pci(device_id: str, lspci_name: str, family: str) -> None:
    found = family_of_pci(device_id, lspci_name)
    assert found is not None and found.name == family


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("NVIDIA GeForce RTX 3060", "Ampere"),
        ("NVIDIA GeForce RTX 5070 Ti", "Blackwell"),
        ("NVIDIA GeForce RTX 4080 SUPER", "Ada"),
        ("NVIDIA GeForce GTX 1650 Ti", "Turing"),
        ("NVIDIA GeForce RTX 2070 SUPER", "Turing"),
        ("NVIDIA GeForce GTX 1080 Ti", "Pascal"),
        ("NVIDIA H100 80GB HBM3", "Hopper"),
        ("NVIDIA L40S", "Ada"),
        ("Tesla V100-SXM2-32GB", "Volta"),
        ("NVIDIA B300 SXM6 AC", "Blackwell"),
    ],
)
def test_family_of_name(name: str, family: str) -> None:
    found = family_of_name(name)
    assert found is not None and found.name == family


@pytest.mark.parametrize(
    ("device_id", "family"), [("15f8", "Pascal"), ("17c2", "Maxwell")],
)
def test_recorded_lspci_lines_get_their_family(device_id: str, family: str) -> None:
    gpus = {gpu.device_id: gpu for gpu in parse_lspci_nn(recorded("lspci-p100-titanx.txt"))}
    gpu = gpus[device_id]
    # by the chip name (GP100GL: a two-letter board suffix), and by the id alone
    assert (found := family_of_pci(gpu.device_id, gpu.name)) and found.name == family
    assert (by_id := family_of_pci(gpu.device_id)) and by_id.name == family


def test_chip_names_with_board_suffixes() -> None:
    # lspci text quoted in a public workstation log: "TU104GL [Quadro RTX 5000] [10de:1eb0]"
    for chip, family in (("TU104GL [Quadro RTX 5000]", "Turing"),
                         ("GP100GL [Tesla P100 PCIe 16GB]", "Pascal"),
                         ("GK110BGL [Tesla K40c]", "Kepler"), ("GB10 [NVIDIA GB10]", "Blackwell")):
        # device id 0001 matches no range: only the chip name can decide
        assert (found := family_of_pci("0001", chip)) and found.name == family, chip


def test_device_id_ranges_do_not_overlap() -> None:
    spans = sorted((low, high) for low, high, _ in DEVICE_ID_RANGES)
    for (_, high), (low, _) in itertools.pairwise(spans):
        assert high < low


@pytest.mark.parametrize(
    ("name", "family"),
    [
        # nvidia-smi's GPU name as public logs print it
        (parse_nvidia_smi_query(recorded("smi-query-rtx5000-ada.txt"), 0).gpus[0].name, "Ada"),
        ("Quadro RTX 5000", "Turing"),  # TensorFlow's device log on a Quadro RTX 5000
        ("NVIDIA GB10", "Blackwell"),  # DGX Spark notes: "NVIDIA GB10, sm_121a"
        ("GeForce GTX TITAN X", "Maxwell"),
        ("NVIDIA TITAN Xp", "Pascal"),
        ("NVIDIA TITAN X (Pascal)", "Pascal"),
        ("NVIDIA GeForce RTX 5060 Laptop GPU", "Blackwell"),
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "Blackwell"),
    ],
)
def test_names_that_look_alike(name: str, family: str) -> None:
    found = family_of_name(name)
    assert found is not None and found.name == family


def test_unknown_names_give_no_family() -> None:
    assert family_of_name("Matrox G200eW") is None
    assert family_of_pci("0001", "Device 0001") is None


def test_branch_rules() -> None:
    pascal, blackwell = family_by_name("Pascal"), family_by_name("Blackwell")
    assert check_branch(580, [pascal]).number == 580
    with pytest.raises(GpuRuleError, match="up to branch 580"):
        check_branch(590, [pascal])
    with pytest.raises(GpuRuleError, match="need branch 570 or newer"):
        check_branch(550, [blackwell])
    with pytest.raises(GpuRuleError, match="unknown"):
        check_branch(581, [blackwell])
    assert newest_branch_for([pascal], 595) == 580
    assert newest_branch_for([blackwell], 595) == 595


def test_flavour_rules() -> None:
    pascal, blackwell, ampere = (family_by_name(n) for n in ("Pascal", "Blackwell", "Ampere"))
    assert choose_flavour([blackwell], 570) == "open"
    assert choose_flavour([ampere], 580) == "open"
    assert choose_flavour([ampere], 550) == "proprietary"  # open is the default from R560
    assert choose_flavour([pascal, ampere], 580) == "proprietary"
    with pytest.raises(GpuRuleError, match="cannot drive both"):
        choose_flavour([pascal, blackwell], 580)
    with pytest.raises(GpuRuleError, match="cannot use the open"):
        check_flavour("open", [pascal])
    with pytest.raises(GpuRuleError, match="need the open"):
        check_flavour("proprietary", [blackwell])
