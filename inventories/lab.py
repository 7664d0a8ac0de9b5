"""An example classroom fleet. Copy it, then put in your room's addresses and data.

Each top-level variable is a pyinfra group: ``(hosts, group_data)``. A host is a name, or
``(name, host_data)``. Data merges key by key: a host's own data wins over its group's.
Every gpulab key is listed in the README ("Inventory data"); `gpulab check inventories/lab.py`
validates them all without connecting.
"""

# The instructor's machine reaches the students' machines over SSH as a sudo user.
_ssh = {"ssh_user": "teacher", "_sudo": True}

# Row 1: Ubuntu 24.04 desktops with RTX 4060s. Defaults: branch 580, open modules,
# Canonical's signed prebuilt modules, the CUDA toolkit the driver runs, Ollama on loopback.
row1 = (
    [
        ("pc-101", {"ssh_hostname": "192.168.50.101"}),
        ("pc-102", {"ssh_hostname": "192.168.50.102"}),
    ],
    {**_ssh, "reboot_allowed": True},
)

# Row 2: older Ubuntu 22.04 machines with GTX 1080s: gpulab caps them at branch 580,
# proprietary modules and CUDA 12.x on its own; nothing to set here.
row2 = (
    [("pc-201", {"ssh_hostname": "192.168.50.201"})],
    {**_ssh, "reboot_allowed": True},
)

# The demo server: Ollama reachable from the classroom subnet only (firewalled).
demo = (
    [("gpu-demo", {"ssh_hostname": "192.168.50.10"})],
    {
        **_ssh,
        "ollama_host": "0.0.0.0:11434",
        "ollama_allowed_clients": ["192.168.50.0/24"],
        "ollama_keep_alive": "1h",
    },
)

# Slow or filtered links: point every download at the school's mirrors and proxies, e.g.
#   "apt_proxy": "http://192.168.50.2:3142",            # apt-cacher-ng on the LAN
#   "nvidia_repo_base": "http://192.168.50.2/cuda/repos",
#   "ollama_download_base": "http://192.168.50.2/ollama/releases",
#   "https_proxy": "http://192.168.50.2:3128",
