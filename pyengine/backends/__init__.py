"""Backends: the CPU runtime (default) and TensorRT (lazy, optional)."""
