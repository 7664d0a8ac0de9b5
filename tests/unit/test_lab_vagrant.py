"""The pure parts of the Vagrant rehearsal: ``vagrant ssh-config`` → pyinfra, the box's files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpulab.inventory import InventoryError
from gpulab.lab import vagrant
from gpulab.lab.vagrant import box_metadata, parse_ssh_config, vagrant_hosts
from tests.needs import skip_or_fail

pytestmark = pytest.mark.unit

# vagrant 2.3.4 + vagrant-libvirt 0.11.2, two machines (recorded)
SSH_CONFIG = """\
Host lab-01
  HostName 192.168.121.253
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /work/gpulab/.vagrant/machines/lab-01/libvirt/private_key
  IdentitiesOnly yes
  LogLevel FATAL

Host lab-02
  HostName 127.0.0.1
  User vagrant
  Port 2200
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/home/my user/.vagrant.d/insecure_private_key"
  IdentityFile /ignored/second/key
  IdentitiesOnly yes
  LogLevel FATAL

"""


def test_ssh_config_becomes_pyinfra_host_data() -> None:
    hosts = parse_ssh_config(SSH_CONFIG)
    assert [name for name, _ in hosts] == ["lab-01", "lab-02"]
    assert hosts[0][1] == {
        "ssh_hostname": "192.168.121.253", "ssh_port": 22, "ssh_user": "vagrant",
        "ssh_key": "/work/gpulab/.vagrant/machines/lab-01/libvirt/private_key",
        "ssh_strict_host_key_checking": "no", "ssh_known_hosts_file": "/dev/null",
        "_sudo": True,
    }
    # VirtualBox's forwarded port, a quoted path with a space, the first key wins
    assert hosts[1][1]["ssh_port"] == 2200
    assert hosts[1][1]["ssh_key"] == "/home/my user/.vagrant.d/insecure_private_key"


def test_root_needs_no_sudo_and_nothing_is_no_host() -> None:
    config = "Host a\n  HostName 10.0.0.1\n  User root\n  IdentityFile /k\n"
    assert parse_ssh_config(config)[0][1]["_sudo"] is False
    assert parse_ssh_config("") == []


def test_a_host_without_its_key_is_named() -> None:
    with pytest.raises(ValueError, match="lab-01 has no identityfile"):
        parse_ssh_config("Host lab-01\n  HostName 10.0.0.1\n  User vagrant\n")


def test_no_running_machine_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setattr(vagrant.shutil, "which", lambda _: "/usr/bin/vagrant")
    said = subprocess.CompletedProcess([], 1, "", "The provider for this Vagrant-managed\n"
                                       "machine is reporting that it is not yet ready for SSH.\n")
    monkeypatch.setattr(vagrant.subprocess, "run", lambda *a, **k: said)
    with pytest.raises(InventoryError, match=r"`vagrant up` first \(vagrant ssh-config: The "
                                             r"provider for this Vagrant-managed machine is"):
        vagrant_hosts(tmp_path)
    monkeypatch.setattr(vagrant.shutil, "which", lambda _: None)
    with pytest.raises(InventoryError, match="vagrant is not installed"):
        vagrant_hosts(tmp_path)


@pytest.mark.parametrize(("size", "gib"), [(8 << 30, 8), ((8 << 30) + 1, 9), (1, 1)])
def test_box_metadata(size: int, gib: int) -> None:
    assert box_metadata(size) == {"provider": "libvirt", "format": "qcow2", "virtual_size": gib}


def test_box_vagrantfile_boots_the_shipped_kernel() -> None:
    text = vagrant.BOX_VAGRANTFILE
    assert 'libvirt.kernel = File.expand_path("vmlinuz", __dir__)' in text
    assert 'libvirt.initrd = File.expand_path("initrd.img", __dir__)' in text
    assert 'libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 quiet mitigations=off"' in text


def test_the_insecure_key_is_vagrants_own() -> None:
    installed = Path("/usr/share/rubygems-integration/all/gems")
    keys = sorted(installed.glob("vagrant-*/keys/vagrant.pub"))
    if not keys:
        skip_or_fail("no Debian-packaged Vagrant here to compare with (`make setup`)")
    assert keys[-1].read_text().strip() == vagrant.VAGRANT_INSECURE_PUBKEY
