"""vLLM alone: its virtualenv, user, model, key file and unit (or, disabled, stopped).

    pyinfra inventories/lab.py deploy/vllm.py

The driver and Ollama are not touched; on GPU hosts run deploy/gpu_host.py for the whole
stack. ``gpulab plan`` shows the wheel and the memory each host's vLLM gets.
"""

from gpulab.deploys.vllm import vllm

vllm()
