"""PyTorch side of fomm-deploy: the FOMM networks, checkpoints, and (later) training."""
