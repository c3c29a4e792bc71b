"""MSA attention kernels (Triton on CUDA, torch paths on CPU)."""
