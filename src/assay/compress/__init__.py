"""Compression: variants (quantization, fp16, pruning), latency/FLOPs/energy, and the damage audit."""
