"""The NVIDIA driver alone (after the apt base), then the reboot policy.

    pyinfra inventories/lab.py deploy/nvidia.py

See ``gpulab plan inventories/lab.py`` for the branch, flavour and packages each host gets.
"""

from gpulab.deploys.apt import apt_base
from gpulab.deploys.nvidia import nvidia_driver
from gpulab.deploys.reboot import reboot_if_needed

apt_base()
nvidia_driver()
reboot_if_needed()
