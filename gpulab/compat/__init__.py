"""Compatibility tables and the pure lookups over them."""

from gpulab.compat.cuda import CompatError, Toolkit, check_pinned_toolkit, choose_toolkit
from gpulab.compat.gpus import GpuRuleError

__all__ = ["CompatError", "GpuRuleError", "Toolkit", "check_pinned_toolkit", "choose_toolkit"]
