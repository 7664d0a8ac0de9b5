"""The CUDA toolkit alone (after the apt base): NVIDIA's repository, pinned toolkit, PATH.

    pyinfra inventories/lab.py deploy/cuda.py
"""

from gpulab.deploys.apt import apt_base
from gpulab.deploys.cuda import cuda_toolkit

apt_base()
cuda_toolkit()
