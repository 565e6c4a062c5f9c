"""``python -m bench.cli`` (as ``torchrun ... -m bench.cli run ...`` launches it)."""

from . import main

main()
