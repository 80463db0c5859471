"""Export a chosen point as packed safetensors and load it back (``autoq.export``)."""
