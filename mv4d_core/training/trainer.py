"""A small, model-agnostic trainer: accumulation, cosine LR, clipping, AMP, EMA, DDP, TensorBoard,
atomic checkpoints and bit-exact resume.

The trainer knows nothing about mv4d's model: it is given a ``step_fn(model, batch, step) ->
StepResult`` that computes the loss. Bit-exact resume (tested) rests on three rules:

* the data order is a pure function of ``(seed, epoch, rank)`` (:class:`ResumableSampler`), and the
  dataset's ``__getitem__`` is deterministic per index (seed any augmentation from the index);
* every RNG the step draws from (python, numpy, torch) is saved in the checkpoint and restored;
* DataLoader workers get their seeds from a private generator, never from the global torch RNG.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from mv4d_core.training.checkpoint import load, rng_state, save_atomic, seed_everything, set_rng_state
from mv4d_core.training.schedule import ModelEMA, cosine_lr


@dataclass
class TrainerConfig:
    """Optimisation settings; echoed into every checkpoint (one source of truth)."""

    max_steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    batch_size: int = 1
    grad_accum: int = 1
    clip_grad_norm: float = 35.0
    amp: str = "auto"  # "auto" = bf16 autocast on CUDA only, "off", "bf16", "fp16"
    ema_decay: float = 0.0  # 0 disables EMA
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    image_every: int = 0  # 0 disables TensorBoard image panels
    tensorboard: bool = True

    def validate(self) -> None:
        if self.max_steps <= 0:
            raise ValueError(f"trainer.max_steps must be positive, got {self.max_steps}")
        if self.grad_accum < 1 or self.batch_size < 1:
            raise ValueError("trainer.grad_accum and trainer.batch_size must be >= 1")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"trainer.amp must be auto|off|bf16|fp16, got {self.amp!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class StepResult:
    """What ``step_fn`` returns for one micro-batch."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # (3, H, W) float 0..1 for TensorBoard


class ResumableSampler(Sampler[int]):
    """Epoch-wise permutation seeded by ``(seed, epoch)``, sharded over ranks, that can start mid-epoch."""

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 batch_size: int = 1):
        if length <= 0:
            raise ValueError("training dataset is empty")
        self.length, self.seed, self.rank, self.world_size, self.shuffle = length, seed, rank, world_size, shuffle
        padded = math.ceil(length / world_size)
        # whole batches only, so the consumed-sample counter always lands on a batch boundary
        self.per_rank = padded - padded % batch_size
        if self.per_rank == 0:
            raise ValueError(f"dataset of {length} samples is smaller than one batch of {batch_size} per rank")
        self.epoch = 0
        self.start = 0

    def order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            idx = torch.randperm(self.length, generator=g).tolist()
        else:
            idx = list(range(self.length))
        padded = math.ceil(self.length / self.world_size) * self.world_size
        idx += idx[: padded - self.length]  # pad so every rank sees equal counts
        return idx[self.rank::self.world_size][: self.per_rank]

    def set_position(self, consumed: int) -> None:
        """Position after ``consumed`` samples on this rank."""
        self.epoch, self.start = divmod(consumed, self.per_rank)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start


def _collate_identity(batch: list) -> list:
    return batch


class Trainer:
    """Runs ``step_fn`` over ``dataset`` for ``cfg.max_steps`` optimizer steps."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset, step_fn: Callable[[torch.nn.Module, Any, int], StepResult],
                 cfg: TrainerConfig, out_dir: str | Path, collate_fn: Callable | None = None,
                 extra_state: dict | None = None, progress: bool = True):
        cfg.validate()
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.step_fn = step_fn
        self.collate_fn = collate_fn or _collate_identity
        self.extra_state = extra_state or {}
        self.progress = progress
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.device = next(model.parameters()).device
        seed_everything(cfg.seed + self.rank)
        self.model = model
        self.ddp_model = torch.nn.parallel.DistributedDataParallel(model) if self.distributed else model
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.dataset = dataset
        self.sampler = ResumableSampler(len(dataset), cfg.seed, self.rank, self.world_size, batch_size=cfg.batch_size)
        self.step = 0
        self.consumed = 0
        self.history: list[dict] = []
        self._writer = None

    # ----------------------------------------------------------------- AMP
    def _autocast(self):
        mode = self.cfg.amp
        if mode == "auto":
            mode = "bf16" if self.device.type == "cuda" else "off"
        if mode == "off":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None, "step": self.step,
                "consumed": self.consumed, "rng": rng_state(), "trainer_config": asdict(self.cfg),
                "history": self.history, **self.extra_state}

    def save_checkpoint(self, name: str = "last.pt") -> Path | None:
        if not self.is_main:
            return None
        return save_atomic(self.state_dict(), self.out_dir / name)

    def resume(self, path: str | Path) -> None:
        state = load(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.consumed = int(state["consumed"])
        self.history = list(state.get("history", []))
        set_rng_state(state["rng"])

    # ----------------------------------------------------------------- loop
    def _loader(self) -> DataLoader:
        self.sampler.set_position(self.consumed)
        g = torch.Generator().manual_seed(self.cfg.seed + 7919 * self.sampler.epoch)
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=self.sampler,
                          num_workers=self.cfg.num_workers, collate_fn=self.collate_fn, generator=g,
                          persistent_workers=False, drop_last=True)

    def _batches(self) -> Iterator[Any]:
        while True:
            for batch in self._loader():
                yield batch
            # the epoch ended: the sampler position rolls over to the next epoch
            self.consumed = (self.sampler.epoch + 1) * self.sampler.per_rank

    def _tb(self):
        if self._writer is None and self.is_main and self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tb"))
        return self._writer

    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train until ``cfg.max_steps`` (or until ``stop_after`` more steps, for tests of resume)."""
        cfg = self.cfg
        target = cfg.max_steps if stop_after is None else min(cfg.max_steps, self.step + stop_after)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.out_dir / "trainer_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        batches = self._batches()
        self.ddp_model.train()
        while self.step < target:
            t0 = time.perf_counter()
            lr = cosine_lr(self.step, cfg.lr, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            terms_sum: dict[str, float] = {}
            images: dict[str, torch.Tensor] = {}
            loss_total = 0.0
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                self.consumed += cfg.batch_size
                sync = micro == cfg.grad_accum - 1 or not self.distributed
                ctx = self.ddp_model.no_sync() if (self.distributed and not sync) else _nullcontext()
                with ctx:
                    with self._autocast():
                        result = self.step_fn(self.ddp_model, batch, self.step)
                    if not torch.isfinite(result.loss):
                        raise FloatingPointError(f"non-finite loss at step {self.step}: {result.terms}")
                    (result.loss / cfg.grad_accum).backward()
                loss_total += float(result.loss.detach()) / cfg.grad_accum
                for k, v in result.terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / cfg.grad_accum
                images = result.images or images
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)) \
                if cfg.clip_grad_norm > 0 else float("nan")
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.model)
            self.step += 1
            record = {"step": self.step, "loss": loss_total, "lr": lr, "grad_norm": grad_norm,
                      "step_time_s": time.perf_counter() - t0, **terms_sum}
            self.history.append(record)
            if self.is_main:
                self._log(record, images)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_total:.4f}", lr=f"{lr:.2e}")
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
        if bar is not None:
            bar.close()
        self.save_checkpoint()
        if self._writer is not None:
            self._writer.flush()
        return self.history

    def _log(self, record: dict, images: dict) -> None:
        writer = self._tb()
        if writer is None:
            return
        if self.step % max(1, self.cfg.log_every) == 0 or self.step == 1:
            for k, v in record.items():
                if k != "step" and isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(f"train/{k}", v, self.step)
        if self.cfg.image_every and images and self.step % self.cfg.image_every == 0:
            for k, img in images.items():
                writer.add_image(k, img.detach().float().clamp(0, 1).cpu(), self.step)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def init_distributed_from_env(backend: str | None = None) -> bool:
    """Initialise torch.distributed when launched by torchrun (``WORLD_SIZE`` > 1); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shutdown_distributed(trainer: "Trainer | None" = None) -> None:
    """End a torchrun job cleanly: wait for every rank, drop ``trainer``'s DDP wrapper (its reducer holds
    the process group, so destroying the group while it lives leaves Gloo's worker threads to die at
    interpreter exit, which aborts the process), then destroy the process group. No-op when
    torch.distributed is not initialised."""
    import gc

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    if trainer is not None:
        trainer.ddp_model = trainer.model
        gc.collect()
    dist.destroy_process_group()
