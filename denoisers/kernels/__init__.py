"""Native CPU kernels for the denoisers: the C sources (``csrc/``), their build-on-first-use loader
(``build``) and the modules that call them (``group_norm``). Each kernel has a PyTorch fallback, so nothing
here is required for correctness, only for CPU speed."""
