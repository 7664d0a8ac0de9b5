"""gpulab: turn bare Ubuntu/Debian machines into ready GPU development hosts."""

__version__ = "0.1.0"
