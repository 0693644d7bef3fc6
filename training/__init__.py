"""PyTorch side of fomm-deploy: the FOMM networks (``model/``), checkpoints, the training sections of a
config, and ``fomm-train`` (upstream's losses and schedule; torchrun/DDP)."""
