"""maskgrpo: MaskGRPO reinforcement learning for masked discrete diffusion models."""

__version__ = "0.1.0"
