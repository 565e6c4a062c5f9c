"""ddpm-bench: measure which denoiser design gives the best DDPM samples for a compute budget."""

__version__ = "0.1.0"
