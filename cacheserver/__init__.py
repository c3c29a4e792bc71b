"""The AsymCache cache daemon. Torch-free; submodules are imported on demand."""
