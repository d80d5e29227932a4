"""``mv4d train``: self-supervised training of the mv4d network from a YAML recipe.

    mv4d train --config training/tiny_synth.yaml --out runs/tiny_synth [--max-steps N] [--resume]
    torchrun --nproc_per_node=K -m mv4d_core.training.command --config CFG --out RUN_DIR   # DDP

Writes ``RUN_DIR/last.pt`` (weights, optimizer, RNG, step, ``model_config`` and the full ``config``
so ``mv4d eval/infer/export --checkpoint RUN_DIR/last.pt`` rebuild the model), ``RUN_DIR/config.yaml``,
``RUN_DIR/tb/`` (TensorBoard scalars and render panels) and ``RUN_DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import sys

from mv4d_core.utils.threads import restores_torch_threads

HELP = "self-supervised training from a YAML recipe (writes RUN_DIR/last.pt, config.yaml, tb/, summary.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training recipe YAML (see training/*.yaml)")
    parser.add_argument("--data", nargs="+", default=None, metavar="SRC",
                        help="replace data.sources: mv4d synth folders, rosbag2 bags, nuScenes dataroots or "
                             "synth:SEED:FRAMES (also clears data.synth_seeds)")
    parser.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument("--ddp", action="store_true",
                        help="initialise torch.distributed from the torchrun environment (automatic when WORLD_SIZE>1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (override config 'threads')")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (log lines only)")
    parser.add_argument("--time-budget-min", type=float, default=None,
                        help="wall-clock budget: after the first warm-up steps, shorten trainer.max_steps (the "
                             "cosine schedule follows) so the run ends within the budget at the measured speed; "
                             "stops at the budget regardless (shared machines)")


def _log_line(step: int, terms: dict, loss: float, sec_per_step: float) -> str:
    main = " ".join(f"{k}={v:.4f}" for k, v in terms.items() if "/" not in k)
    stats = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in terms.items() if k.startswith("stats/"))
    return f"step {step} loss={loss:.4f} {main} | {stats} | {sec_per_step:.2f} s/step"


@restores_torch_threads
def run(args: argparse.Namespace) -> int:
    import json
    import os
    import time
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from mv4d_core.models import build_model, count_parameters
    from mv4d_core.training.checkpoint import load
    from mv4d_core.training.config import TrainConfig
    from mv4d_core.training.data import build_dataset, collate_samples
    from mv4d_core.training.step import SelfSupervisedStep
    from mv4d_core.training.trainer import Trainer, init_distributed_from_env, shutdown_distributed

    cfg = TrainConfig.from_yaml(args.config)
    if args.data:
        cfg.data.sources = list(args.data)
        cfg.data.synth_seeds = []
    if args.max_steps is not None:
        cfg.trainer.max_steps = args.max_steps
    threads = args.threads if args.threads is not None else cfg.threads
    if threads and threads > 0:
        torch.set_num_threads(threads)
        cfg.threads = threads
    cfg.validate()

    distributed = init_distributed_from_env() if (args.ddp or int(os.environ.get("WORLD_SIZE", "1")) > 1) else False
    rank = dist.get_rank() if distributed else 0
    is_main = rank == 0
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    ckpt_path = out / "last.pt"
    if args.resume and not ckpt_path.is_file():
        print(f"--resume: no checkpoint at {ckpt_path}", file=sys.stderr)
        return 2
    if not args.resume and ckpt_path.is_file():
        print(f"{ckpt_path} exists: pass --resume to continue it or choose another --out", file=sys.stderr)
        return 2
    if args.resume:
        state = load(ckpt_path)
        old = state.get("model_config")
        if old is not None and old != cfg.model.to_dict():
            print(f"--resume: the model section of {args.config} differs from the one in {ckpt_path}", file=sys.stderr)
            return 2
        old_tc = state.get("trainer_config") or {}
        if args.max_steps is None and "max_steps" in old_tc:
            cfg.trainer.max_steps = int(old_tc["max_steps"])  # continue the schedule the run was on
        del state

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t0 = time.perf_counter()
    try:
        dataset = build_dataset(cfg, progress=is_main and not args.no_progress)
    except ValueError as e:          # no triplet, no ego pose, a bad slice: the data cannot train
        print(f"mv4d train: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if is_main:
        print(f"{len(dataset)} training samples prepared in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(cfg.trainer.seed)  # identical initial weights on every rank
    model = build_model(cfg.model).to(device)
    step_impl = SelfSupervisedStep(cfg)
    log_every = max(1, cfg.trainer.log_every)
    timer = {"t": time.perf_counter(), "n": 0}

    def step_fn(m, batch, step):
        result = step_impl(m, batch, step)
        timer["n"] += 1
        if is_main and ((step + 1) % log_every == 0 or step == 0):
            now = time.perf_counter()
            print(_log_line(step + 1, result.terms, float(result.loss.detach()), (now - timer["t"]) / timer["n"]),
                  flush=True)
            timer["t"], timer["n"] = now, 0
        return result

    extra = {"model_config": cfg.model.to_dict(), "config": cfg.to_dict()}
    trainer = Trainer(model, dataset, step_fn, cfg.trainer, out, collate_fn=collate_samples, extra_state=extra,
                      progress=is_main and not args.no_progress)
    if args.resume:
        trainer.resume(ckpt_path)
        if is_main:
            print(f"resumed {ckpt_path} at step {trainer.step}")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "config.yaml")
        print(f"model {cfg.model.name}: {count_parameters(model) / 1e6:.2f} M parameters; "
              f"training steps {trainer.step} -> {cfg.trainer.max_steps}; run folder {out}")
    start_step = trainer.step
    t_fit = time.perf_counter()
    if args.time_budget_min:
        _fit_within_budget(trainer, cfg, extra, args.time_budget_min * 60.0, t_fit, is_main)
        history = trainer.history
    else:
        history = trainer.fit()
    elapsed = time.perf_counter() - t_fit
    if distributed:
        shutdown_distributed(trainer)
    if not is_main:
        return 0
    done = trainer.step - start_step
    tail = history[-min(10, len(history)):] if history else []
    summary = {
        "steps": trainer.step, "steps_this_run": done, "seconds": elapsed,
        "steps_per_s": done / elapsed if elapsed > 0 else float("nan"),
        "final_loss_mean_last10": sum(h["loss"] for h in tail) / len(tail) if tail else float("nan"),
        "first_loss": history[0]["loss"] if history else float("nan"),
        "checkpoint": str(ckpt_path), "samples": len(dataset), "threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done: step {trainer.step} ({done} this run, {summary['steps_per_s']:.2f} steps/s); "
          f"loss {summary['first_loss']:.4f} -> {summary['final_loss_mean_last10']:.4f} (mean of last 10); "
          f"checkpoint {ckpt_path}")
    return 0


def _fit_within_budget(trainer, cfg, extra: dict, budget_s: float, t0: float, is_main: bool,
                       chunk: int = 25) -> None:
    """Warm-up steps, then ``max_steps`` cut to what fits in ``budget_s`` at the measured speed, then
    chunks of ``chunk`` steps until done or out of time.

    The first cut happens inside the linear warm-up (whose LR does not depend on ``max_steps``), so
    the cosine schedule is a clean, shorter one. If the machine slows down later (shared cores),
    ``max_steps`` is only ever shortened again (the cosine jumps ahead, the LR never rises)."""
    import time

    def shrink(sec_per_step: float) -> None:
        left = budget_s - (time.perf_counter() - t0)
        fits = trainer.step + int(0.95 * left / sec_per_step)
        if fits < 0.98 * cfg.trainer.max_steps:
            new_max = max(trainer.step + 1, fits)
            if is_main:
                print(f"time budget {budget_s / 60:.0f} min at {sec_per_step:.2f} s/step: max_steps "
                      f"{cfg.trainer.max_steps} -> {new_max}", flush=True)
            cfg.trainer.max_steps = new_max          # the Trainer reads the same TrainerConfig object
            extra["config"]["trainer"]["max_steps"] = new_max
            trainer.save_checkpoint()                 # so a --resume continues on the cut schedule

    start = trainer.step
    calib = max(3, min(cfg.trainer.warmup_steps, 30))
    if trainer.step < cfg.trainer.max_steps:
        trainer.fit(stop_after=calib)
    shrink((time.perf_counter() - t0) / max(1, trainer.step - start))
    while trainer.step < cfg.trainer.max_steps and time.perf_counter() - t0 < budget_s:
        t_chunk, s_chunk = time.perf_counter(), trainer.step
        trainer.fit(stop_after=chunk)
        if trainer.step < cfg.trainer.max_steps:
            shrink((time.perf_counter() - t_chunk) / max(1, trainer.step - s_chunk))
    if trainer.step < cfg.trainer.max_steps and is_main:
        print(f"time budget reached at step {trainer.step} of {cfg.trainer.max_steps}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mv4d_core.training.command", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
