"""The apt base alone: apt proxy, waiting on the dpkg lock, fresh lists and base tools.

    pyinfra inventories/lab.py deploy/base.py
"""

from gpulab.deploys.apt import apt_base

apt_base()
