"""The stages' random draws: one generator per purpose, and the one list of their salts.

Every draw of a stage comes from ``stage_generator(seed, salt)``, a CPU generator seeded by the
stage seed mixed with the purpose's salt, so results never depend on the global RNG and two
purposes never share a stream. (The tiny model's parameter init is the one use of the global
RNG, ``torch.manual_seed(seed)`` before any training.)
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Salt(IntEnum):
    SFT_BATCHES = 1  # sft: batch rows and noising
    ROUND_PROMPTS = 3  # rollout: the round's prompt order
    SAMPLING = 5  # rollout: the sampler's draws (seed + shard)
    MASK_SEEDS = 7  # rollout/update: the mu mask seeds S_1..S_mu
    MINIBATCH_ORDER = 11  # update: the row shuffle before minibatching
    EVALUATION = 13  # evaluate: the eval sampler's draws
    LORA_INIT = 17  # fresh LoRA adapters (A's init; B starts at zero)
    BENCH_DIVERSITY = 99  # bench/emerge_vs_maskgit.py: the diversity samples


def stage_generator(seed: int, salt: Salt) -> torch.Generator:
    """A CPU generator for one purpose of a stage."""
    return torch.Generator().manual_seed((seed * 1_000_003 + int(salt)) % (2**63))
