"""Ollama alone: the pinned release, its user, unit, drop-in and (when exposed) firewall.

    pyinfra inventories/lab.py deploy/ollama.py

The driver is not touched; on GPU hosts run deploy/gpu_host.py for the whole stack.
"""

from gpulab.deploys.ollama import ollama

ollama()
