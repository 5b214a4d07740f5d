"""Input specifications: devices, models, quantization, run options."""
