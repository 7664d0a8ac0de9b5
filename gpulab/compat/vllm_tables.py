"""What gpulab knows about vLLM releases and the models it serves, as data, in one place.

Sources, per row:

- vLLM 0.26.0: the PyPI wheels are CUDA 13 builds from 0.26 on, with PyTorch 2.11; CUDA 12.9
  builds are published at ``https://wheels.vllm.ai/<version>/cu129`` (allenai/open-instruct
  pull request 1874, "Validated vllm 0.26 / torch 2.11 waypoint", run on CUDA 12.8 drivers
  under minor-version compatibility; vllm-project/vllm issue 44335 for the index layout).
  Compute capability 7.5 or higher: vllm-project/vllm
  ``docs/getting_started/installation/gpu.cuda.inc.md`` (v0.21.0 and later).
- vLLM 0.9.0: "upgraded to PyTorch 2.7 ... The default wheel has been upgraded from CUDA 12.4
  to CUDA 12.8" (v0.9.0 release notes); compute capability 7.0 or higher
  (docs.vllm.ai/en/v0.9.0/getting_started/installation/gpu.html).
- Qwen2.5-7B-Instruct and its AWQ / GPTQ-Int4 builds: ``config.json`` of each Hugging Face
  repository (Qwen/Qwen2.5-7B-Instruct: hidden_size 3584, num_hidden_layers 28,
  num_attention_heads 28, num_key_value_heads 4, torch_dtype bfloat16); weight sizes are the
  repositories' safetensors totals.
- Lowest compute capability per GPU family: NVIDIA's "CUDA GPUs - Compute Capability" list
  (developer.nvidia.com/cuda-gpus).
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class WheelBuild(NamedTuple):
    """One CUDA build of a vLLM release and where pip finds it.

    ``source`` ``pypi`` is the default wheel on the package index (``vllm_pip_index_url``, a
    mirror, or pip's default); ``variant`` is ``<vllm_wheel_index_base>/<version>/<tag>``,
    with PyTorch of the same CUDA from ``<vllm_torch_index_base>/<tag>``.
    """

    cuda: str  # the CUDA release the wheel and its PyTorch are built with: "12.9"
    source: Literal["pypi", "variant"]

    @property
    def tag(self) -> str:
        """PyTorch's and vLLM's name for the build: ``cu129``."""
        return "cu" + self.cuda.replace(".", "")


class VllmRelease(NamedTuple):
    """A vLLM release gpulab can install: its wheels, default first, and the GPUs it runs on."""

    version: str
    torch: str
    builds: tuple[WheelBuild, ...]
    min_compute_capability: tuple[int, int]


VLLM_RELEASES: tuple[VllmRelease, ...] = (
    VllmRelease("0.26.0", "2.11", (WheelBuild("13.0", "pypi"), WheelBuild("12.9", "variant")),
                (7, 5)),
    VllmRelease("0.9.0", "2.7.0", (WheelBuild("12.8", "pypi"),), (7, 0)),
)

# Installed when the data names no vllm_version.
DEFAULT_VLLM_VERSION = "0.26.0"

# vLLM's own defaults (vllm serve --help): the fraction of the GPU's memory one instance may
# take, and the port.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# The lowest compute capability of each family gpulab knows (families do not straddle the
# floors above: Volta is 7.0/7.2, Turing 7.5).
FAMILY_MIN_COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {
    "Kepler": (3, 0), "Maxwell": (5, 0), "Pascal": (6, 0), "Volta": (7, 0), "Turing": (7, 5),
    "Ampere": (8, 0), "Ada": (8, 9), "Hopper": (9, 0), "Blackwell": (10, 0),
}


class HfModel(NamedTuple):
    """A Hugging Face model's ``config.json`` values that size its KV cache, and its weights.

    ``quantized`` names builds of the same model with smaller weights, smallest last.
    """

    repo: str
    num_hidden_layers: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    kv_dtype_bytes: int  # torch_dtype's bytes per value (bfloat16/float16: 2): vLLM's "auto"
    weights_bytes: int  # the repository's safetensors total, to two decimals of a GB
    quantized: tuple[str, ...] = ()

    def kv_cache_bytes(self, tokens: int) -> int:
        """K and V for every layer and KV head, for ``tokens`` tokens."""
        per_token = 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim
        return per_token * self.kv_dtype_bytes * tokens


HF_MODELS: dict[str, HfModel] = {
    model.repo: model
    for model in (
        HfModel("Qwen/Qwen2.5-7B-Instruct", 28, 4, 128, 3584, 2, 15_230_000_000,
                quantized=("Qwen/Qwen2.5-7B-Instruct-AWQ", "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4")),
        # Both 4-bit builds keep the embeddings and lm_head in float16: ~5.58 GB each.
        HfModel("Qwen/Qwen2.5-7B-Instruct-AWQ", 28, 4, 128, 3584, 2, 5_580_000_000),
        HfModel("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", 28, 4, 128, 3584, 2, 5_580_000_000),
    )
}

# Activations at the profile run, CUDA graphs and the CUDA context, on top of the weights and
# the KV cache: a planning margin, not a measurement.
VLLM_RUNTIME_MARGIN_MIB = 1536
