"""Update and SFT under DeepSpeed ZeRO (DESIGN.md "Multi-GPU"), one pod, many processes.

Launch the stage main with ``torchrun --nproc_per_node N -m maskgrpo.stages.update --spec ...``
or ``deepspeed --num_gpus N --module maskgrpo.stages.update --spec ...`` (that launcher appends
``--local_rank=N``; ``stage_main`` accepts it). With ``model.deepspeed.enabled`` the stage:

1. joins the process group (``deepspeed.init_distributed``; NCCL on CUDA, gloo on CPU) and
   pins its GPU (``LOCAL_RANK``); the helper op DeepSpeed JIT-builds once is cached under
   ``$MASKGRPO_CACHE/torch_extensions`` (``TORCH_EXTENSIONS_DIR``);
2. wraps the policy and its AdamW in a DeepSpeed engine with ZeRO stage 0-3, bf16 or fp32
   (``model.dtype``), gradient clipping, gradient accumulation and optional CPU offload;
3. gives each rank a contiguous slice of every minibatch and splits that into
   ``gradient_accumulation_steps`` micro-batches. Every micro-batch's loss is its exact share of
   the minibatch loss (its token or sequence count over the minibatch's), so summed over ranks
   and micro-batches the gradient equals the single-process one: the result does not depend on
   the number of processes (up to float summation order; the tests measure it). The masks are
   unchanged: iteration j of a minibatch uses mask j on every rank (ALGORITHM.md §3).
4. Only rank 0 writes to the store; under ZeRO-3 the weights are gathered first.

Deviation: under DeepSpeed the AdamW state is not carried to the next round (ZeRO partitions it
into flat buffers); each round's update starts with fresh moments. Without ``enabled`` nothing
here runs and the plain PyTorch path is used (``TorchStepper``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

from maskgrpo.specs import ModelSpec

__all__ = ["Rank", "Stepper", "TorchStepper", "DeepSpeedStepper", "setup", "ds_config", "local_part", "gathered", "barrier"]


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    gradient_accumulation_steps: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Stepper(Protocol):
    """How a loss share becomes an optimizer step (the hook update and SFT call)."""

    model: torch.nn.Module
    accumulation: int

    def backward(self, share: torch.Tensor) -> None: ...

    def step(self) -> float: ...


class TorchStepper:
    """Plain PyTorch: backward each share, then clip and step once per minibatch."""

    accumulation = 1

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None):
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip

    def backward(self, share: torch.Tensor) -> None:
        share.backward()

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf")))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm


class DeepSpeedStepper:
    """A DeepSpeed engine: it averages gradients over ranks and divides by the accumulation
    steps, so a share is scaled by world x accumulation before ``engine.backward``."""

    def __init__(self, engine, rank: Rank):
        self.engine, self.rank = engine, rank
        self.model = engine
        self.accumulation = rank.gradient_accumulation_steps

    def backward(self, share: torch.Tensor) -> None:
        self.engine.backward(share * (self.rank.world_size * self.accumulation))
        self.engine.step()  # an optimizer step only at the accumulation boundary

    def step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0


def _parse_env() -> Rank:
    return Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def setup(spec: ModelSpec) -> Rank:
    """Join the process group (module docstring, 1); a single-process Rank when disabled."""
    ds = spec.deepspeed
    if not ds.enabled:
        return Rank()
    from maskgrpo.models.loading import cache_root

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))
    env = _parse_env()
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(29500 + os.getpid() % 1000)
    cuda = spec.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank)
    backend = ds.backend if ds.backend != "auto" else ("nccl" if cuda else "gloo")
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return Rank(env.rank, env.world_size, env.local_rank, ds.gradient_accumulation_steps)


def ds_config(spec: ModelSpec, rank: Rank, grad_clip: float | None) -> dict:
    """The DeepSpeed config of a RunSpec's model section (micro-batch size is nominal: the stage
    slices the batches itself and calls backward/step per micro-batch)."""
    ds = spec.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": ds.gradient_accumulation_steps,
        "train_batch_size": ds.gradient_accumulation_steps * rank.world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": spec.dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if grad_clip:
        config["gradient_clipping"] = grad_clip
    return config


def make_stepper(policy, optimizer: torch.optim.Optimizer, spec: ModelSpec, rank: Rank, grad_clip: float | None) -> Stepper:
    """A TorchStepper, or (``model.deepspeed.enabled``) an engine over the policy's model;
    the policy's model is replaced by the engine so ``policy.logits`` runs through it."""
    if not spec.deepspeed.enabled:
        return TorchStepper(policy.model, optimizer, grad_clip)
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=policy.model, optimizer=optimizer,
                                           config=ds_config(spec, rank, grad_clip))
    policy.model = engine
    return DeepSpeedStepper(engine, rank)


def unwrap(policy) -> None:
    """Put the bare model back in the policy after training (the engine's ``module``)."""
    module = getattr(policy.model, "module", None)
    if module is not None and type(policy.model).__name__.endswith("Engine"):
        policy.model = module


def local_part(rows: torch.Tensor, rank: Rank) -> list[torch.Tensor]:
    """This rank's contiguous slice of ``rows``, split into its accumulation micro-batches
    (empty ones possible when a minibatch has fewer rows than world x accumulation)."""
    mine = torch.tensor_split(rows, rank.world_size)[rank.rank]
    return list(torch.tensor_split(mine, rank.gradient_accumulation_steps))


@contextlib.contextmanager
def gathered(model: torch.nn.Module, spec: ModelSpec) -> Iterator[None]:
    """Full parameters inside the block (ZeRO-3 gathers them on every rank; otherwise a no-op)."""
    if spec.deepspeed.enabled and spec.deepspeed.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield


def barrier(spec: ModelSpec) -> None:
    if spec.deepspeed.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()
