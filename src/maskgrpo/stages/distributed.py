"""Update and SFT under DeepSpeed ZeRO (docs/design.md, "Multi-GPU"), one pod, many processes.

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
   unchanged: iteration j of a minibatch uses mask j on every rank (docs/algorithm.md §3).
4. Only rank 0 writes to the store; under ZeRO-3 the weights are gathered first. The stage's
   metrics (SFT losses, update loss/clip/KL means, forwards, wall time) are reduced over the ranks,
   so every rank returns the same result and writes the same KFP outputs (the ranks of one pod
   share those files).

5. The AdamW state carries over between rounds as on the plain path, in the same files
   (``optimizer.safetensors`` + ``optimizer.json``, stages/optimizer.py ``save_optimizer``): at the
   end of a round every rank joins in assembling each parameter's full ``exp_avg`` /
   ``exp_avg_sq`` from the ZeRO partitions (``deepspeed.utils.safe_get_full_optimizer_state``,
   ZeRO 0-3) and rank 0 writes them keyed ``{index}.{key}`` (index = position in
   ``model.parameters()``) with the step count; at the next round's start each rank loads them
   and writes its partitions back (``safe_set_full_optimizer_state``) before the first step. The
   files are interchangeable with the plain path's (either can resume the other).

Without ``enabled`` nothing here runs and the plain PyTorch path is used (``TorchStepper``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

from maskgrpo.specs import ModelSpec

__all__ = ["Rank", "Stepper", "TorchStepper", "DeepSpeedStepper", "setup", "ds_config", "local_part", "gathered", "barrier",
           "all_reduce"]


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

    def backward(self, share: torch.Tensor, last: bool = True) -> None:
        """Accumulate the gradient of ``share``; ``last`` False: more shares of the same
        micro-batch follow (the update's backward per log-prob chunk)."""
        ...

    def step(self) -> float: ...


class TorchStepper:
    """Plain PyTorch: backward each share, then clip and step once per minibatch."""

    accumulation = 1

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None):
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip

    def backward(self, share: torch.Tensor, last: bool = True) -> None:
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

    def backward(self, share: torch.Tensor, last: bool = True) -> None:
        """One ``engine.backward`` per share; ``engine.step`` after a micro-batch's last share
        (an optimizer step only at the accumulation boundary). The engine counts micro-steps in
        ``engine.step``, so a micro-batch of several shares sets the boundary itself: every
        share but the micro-batch's last is off the boundary (no gradient reduction yet), the last
        one at it exactly when the engine's own count says so."""
        engine = self.engine
        at_boundary = (engine.micro_steps + 1) % engine.gradient_accumulation_steps() == 0
        engine.set_gradient_accumulation_boundary(last and at_boundary)
        engine.backward(share * (self.rank.world_size * self.accumulation))
        if last:
            engine.step()

    def step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    # -- AdamW state in the plain path's layout (module docstring, 5) ---------------------------

    def _flat_state_owners(self) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        """The torch optimizer that holds the state and the tensors it is keyed by: ZeRO 1-2,
        ZeRO-3 and the bf16 wrapper step their client optimizer over flat fp32 partitions; ZeRO-0
        in fp32 steps it over the parameters themselves."""
        opt = self.engine.optimizer
        for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition"):
            flats = getattr(opt, name, None)
            if flats is not None:
                return opt.optimizer, list(flats)
        return opt, [p for group in opt.param_groups for p in group["params"] if p.requires_grad]

    def export_optimizer(self, keep: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, meta)`` as ``common.save_optimizer`` writes them. Collective: every rank
        calls it; ``keep=False`` (ranks other than 0) drops the assembled tensors at once."""
        from deepspeed.utils import safe_get_full_optimizer_state

        inner, flats = self._flat_state_owners()
        params = list(self.engine.module.parameters())
        steps = [inner.state[f]["step"] for f in flats if "step" in inner.state.get(f, {})]
        tensors: dict[str, torch.Tensor] = {}
        if steps:  # else no step was taken: nothing to carry, like an empty torch state
            step = torch.tensor(float(steps[0]), dtype=torch.float32)
            for index, param in enumerate(params):
                if not param.requires_grad:
                    continue
                for key in ADAM_KEYS:
                    if _fragmented(param):
                        value = safe_get_full_optimizer_state(param, key)
                    else:
                        value = inner.state[param][key] if key in inner.state.get(param, {}) else None
                    if value is not None and keep:
                        tensors[f"{index}.{key}"] = value.detach().float().cpu().clone()
                if keep and f"{index}.exp_avg" in tensors:
                    tensors[f"{index}.step"] = step.clone()
        group = inner.param_groups[0]
        hyper = {k: (list(group[k]) if isinstance(group[k], tuple) else group[k]) for k in inner.defaults if k in group}
        meta = {"param_groups": [{**hyper, "params": list(range(len(params)))}], "scalars": {}}
        return tensors, meta

    def import_optimizer(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load full per-parameter AdamW state (``export_optimizer``'s or the plain path's
        tensors) into this rank's partitions; call on every rank before the first step."""
        from deepspeed.utils import safe_set_full_optimizer_state

        steps = [float(v) for k, v in tensors.items() if k.endswith(".step")]
        if not steps:
            return
        inner, flats = self._flat_state_owners()
        for flat in flats:  # torch AdamW creates its state lazily at the first step: do it now
            state = inner.state[flat]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                for key in ADAM_KEYS:
                    state[key] = torch.zeros_like(flat, memory_format=torch.preserve_format)
            state["step"].fill_(max(steps))  # every parameter steps together
        link = getattr(self.engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
        if link is not None:  # ZeRO 1-2 / bf16: point the fragments at the new state tensors
            link()
        for index, param in enumerate(self.engine.module.parameters()):
            if not param.requires_grad:
                continue
            for key in ADAM_KEYS:
                value = tensors.get(f"{index}.{key}")
                if value is None:
                    continue
                if _fragmented(param):
                    safe_set_full_optimizer_state(param, value.to(param.device, torch.float32), key)
                else:
                    inner.state[param][key].copy_(value)


ADAM_KEYS = ("exp_avg", "exp_avg_sq")


def _fragmented(param: torch.Tensor) -> bool:
    """Whether DeepSpeed keeps this parameter's fp32 copy and state in partitions (ZeRO 1-3, bf16)."""
    return hasattr(param, "ds_id") or hasattr(param, "_hp_mapping")


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
        # always explicit: DeepSpeed's default is 1.0, which clipped SFT (no clipping) at norm 1
        "gradient_clipping": float(grad_clip) if grad_clip else 0.0,
    }
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


def all_reduce(values: list[float], rank: Rank, op: str = "sum") -> list[float]:
    """``values`` summed (``op="max"``: maximised) over the ranks; as given in one process."""
    if rank.world_size == 1:
        return list(values)
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.tolist()
