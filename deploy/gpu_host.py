"""The whole stack for each host, in order: apt base, NVIDIA driver, CUDA toolkit, Ollama,
the course models, vLLM (when vllm_enabled; stopped again when it is turned off).

    pyinfra inventories/lab.py deploy/gpu_host.py

Every host's data is validated and its plan made before any host is changed; see
``gpulab plan inventories/lab.py`` for what each host will get and why.
"""

from gpulab.deploys.apt import apt_base
from gpulab.deploys.cuda import cuda_toolkit
from gpulab.deploys.models import course_models
from gpulab.deploys.nvidia import nvidia_driver
from gpulab.deploys.ollama import ollama
from gpulab.deploys.reboot import reboot_if_needed
from gpulab.deploys.vllm import vllm

apt_base()
nvidia_driver()
reboot_if_needed()
cuda_toolkit()
ollama()
course_models()
vllm()
