"""The one test of whether a device string names a CUDA device ("cuda", "cuda:0"). Torch-free on purpose:
an engine outside this process and the rows' readers ask it without loading a GPU library."""

from __future__ import annotations

from deploybench.enums import Device


def is_cuda(device: str) -> bool:
    return str(device).startswith(Device.CUDA)
