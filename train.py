"""train.py: the one training loop and the one checkpoint format, shared by every stage.

The stages (train_s1.py, train_s2.py, train_fusion.py through recipe.py; gpp.py) build their data,
model, loss and list of trainable parameters, then call `fit`. Freezing is which parameters go to the
optimizer (plus eval mode for frozen parts), never a second loop. This module knows the models
(deepfeat.py) and nothing of cubes, losses or flags: a batch is whatever the stage's loss_fn takes.

Reading order: 1. configs and the learning rate (and DDP)  2. the loop (`fit`)  3. checkpoints
4. logs.

Optimiser and schedule as in the authors' code (Sonicious/DeepFeatures): AdamW (lr 1e-4, weight decay
1.5e-4), linear warm-up from 0.001 x lr, then ReduceLROnPlateau on the validation centre MAE
(factor 0.35, patience 5, min lr 1.5e-6). The --quick preset replaces the plateau by a cosine decay
over its fixed number of steps (`scheduled_lr`; docs/learning.md).

Checkpoint (one format, `torch.load(..., weights_only=True)` safe: plain dicts, lists, numbers,
strings and tensors): {"format", "kind", "model_config", "model", "optimizer", "scheduler",
"epoch", "step", "history", "train_config", "meta"}. Written atomically (data.write_atomic), so an
interrupted run keeps its last finished epoch and `--resume` goes on from there.

Not a script; see train_s2.py for the command line.
"""
import atexit
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from data import write_atomic, write_csv
from deepfeat import AutoencoderConfig, FusionConfig, FusionModel, GPPConfig, GPPTransformer, ModalityAutoencoder

CHECKPOINT_FORMAT = "deepfeat-checkpoint-v1"


# ----------------------------------------------------------------------------------------------
# 1. Configs and the learning rate
# ----------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """What `fit` needs; stored in every checkpoint. lr per step, warm-up and max in optimiser steps."""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1.5e-4
    warmup_steps: int = 0
    max_steps: int | None = None
    clip: float = 1.0
    seed: int = 0                # weights, dropout and the training patches
    split_seed: int = 0          # which cubes are train / val / test, and the val / test patches
    device: str = "auto"
    schedule: str = "plateau"
    plateau_factor: float = 0.35
    plateau_patience: int = 5
    min_lr: float = 1.5e-6
    monitor: str = "centre_mae"
    log_every: int = 20
    workers: int = 0
    amp: bool = False


def scheduled_lr(step, cfg, total_steps):
    """The learning rate of optimiser step `step` (0-based), or None where ReduceLROnPlateau owns it.

    Warm-up: linear from 0.001 x lr to lr over cfg.warmup_steps (authors' code). After it:
      "plateau"  None: ReduceLROnPlateau on the validation metric, once per epoch (authors' code);
      "cosine"   min_lr + (lr - min_lr) (1 + cos(pi p)) / 2, p = the share of the post-warm-up steps
                 done, reaching min_lr at total_steps. A plateau patience counted in epochs starves
                 short epochs (batches of 32 on sample_data: ~20-step epochs, the rate at its floor
                 by step ~600), so a fixed step budget uses "cosine" (the --quick preset)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (0.001 + 0.999 * (step + 1) / cfg.warmup_steps)
    if cfg.schedule == "plateau":
        return None
    p = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def resolve_device(name):
    """auto | cpu | cuda -> torch.device; under torchrun CUDA is this process's GPU (LOCAL_RANK)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu" if name == "auto" else name)


def init_distributed(device_name):
    """Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1): join the process group, nccl on CUDA and
    gloo on CPU, one GPU per process; every rank but 0 prints nothing. No-op in a plain run."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = resolve_device(device_name).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        if dist.get_rank() > 0:
            sys.stdout = open(os.devnull, "w")


def end_distributed():
    """Leave the process group together at the end of a stage (no-op in a plain run): a rank that
    exits while another still talks to it can abort the job. Then end the process at exit, before
    Python's finalization: once DistributedDataParallel has wrapped a model, gloo's worker threads
    outlive destroy_process_group (torch 2.13), and a worker that drops its last reference to a
    finished collective during interpreter shutdown needs the GIL there and aborts its rank
    (SIGABRT, "terminate called without an active exception", after all the work is written; seen
    under CPU load). Everything is written by then; the exit handler flushes and leaves (status 0)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        atexit.register(_exit_before_finalization)


def _exit_before_finalization():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rank_and_world():
    """(this process's rank, number of processes): (0, 1) outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def main_rank_first(work):
    """work() on rank 0, then on the other ranks: rank 0 prepares what they then only read (the cube
    cache), so memory is one cube at a time on one rank. work() alone outside torchrun."""
    rank, world = rank_and_world()
    if rank > 0:
        dist.barrier()
    result = work()
    if rank == 0 and world > 1:
        dist.barrier()
    return result


def sum_over_ranks(values):
    """float64 tensor summed over the DDP ranks (itself in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


# ----------------------------------------------------------------------------------------------
# 2. The loop
# ----------------------------------------------------------------------------------------------

def fit(model, params, loss_fn, train_batches, val_batches, cfg: TrainConfig, out_dir, checkpoint_meta, resume=False,
        test_batches=None):
    """Train `params` of `model`; validate, schedule and checkpoint every epoch.

    loss_fn(model, batch) -> (loss, {component: scalar tensor}) with cfg.monitor among them.
    train_batches(epoch) and val_batches() yield batches (dicts of tensors). Returns the history
    (one dict per epoch) also written to OUT/log.csv and OUT/loss_curves.png. Under torchrun the
    model is wrapped in DistributedDataParallel (gradients averaged over the ranks, each with its
    share of every batch); metrics are summed over the ranks; rank 0 writes checkpoint and logs.
    With test_batches() (--log-test) the test split is scored after every epoch too, as test_* columns
    of the history, for learning curves: nothing in the loop reads them.
    """
    device = resolve_device(cfg.device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    rank, world = rank_and_world()
    model.to(device)
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor,
                                                         patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    start_epoch, step, history = 0, 0, []
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, kind=checkpoint_meta["kind"])
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        plateau.load_state_dict(ckpt["scheduler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        print(f"resuming {ckpt_path} after epoch {start_epoch} (step {step})")
    trained = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

    total_steps = cfg.max_steps or (cfg.epochs * len(train_batches(0)) if cfg.schedule == "cosine" else None)
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        torch.manual_seed((cfg.seed * 1000 + epoch) * world + rank)   # dropout: reproducible on resume, own per rank
        model.train()
        t_epoch = time.time()
        totals, count, t_log, n_log = {}, 0, time.time(), 0
        for batch in train_batches(epoch):
            # learning rate: warm-up, then the cosine schedule or the plateau scheduler (end of epoch)
            lr = scheduled_lr(step, cfg, total_steps)
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            # forward and backward (DDP averages the gradients of the ranks here)
            batch = to_device(batch, device)
            n = _batch_size(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                loss, comps = loss_fn(trained, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # clip and step
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            optimizer.step()
            step += 1
            # one timed log line every cfg.log_every steps
            for k, v in comps.items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
            count += n
            n_log += n * world
            if step % cfg.log_every == 0:
                print(f"epoch {epoch + 1} | step {step} | loss {loss.item():.4f} | "
                      f"{n_log / max(time.time() - t_log, 1e-6):.0f} samples/s", flush=True)
                t_log, n_log = time.time(), 0
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        totals, count = reduce_totals(totals, count)
        if count == 0:
            raise SystemExit(f"no training {NO_SAMPLES}")
        # end of epoch: BatchNorm statistics, validation, the plateau schedule
        recalibrate_batchnorm(model, loss_fn, train_batches(epoch), device)
        val = evaluate(model, loss_fn, val_batches(), device)
        if not val:
            raise SystemExit(f"no validation {NO_SAMPLES}")
        if cfg.schedule == "plateau" and step >= cfg.warmup_steps and cfg.monitor in val:
            plateau.step(val[cfg.monitor])
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.time() - t_epoch, 2),
               **{f"train_{k}": v / count for k, v in totals.items()}, **{f"val_{k}": v for k, v in val.items()}}
        if test_batches is not None:
            row.update({f"test_{k}": v for k, v in evaluate(model, loss_fn, test_batches(), device).items()})
        history.append(row)
        print(f"epoch {epoch + 1} | step {step} | " + " | ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("train_", "val_", "test_"))) +
            f" | {count / max(row['seconds'], 1e-6):.0f} samples/s", flush=True)
        # checkpoint and logs, on rank 0 (atomic: an interrupted run keeps this epoch)
        check_ranks_agree(model)
        if rank == 0:
            meta = {**checkpoint_meta.get("meta", {}), "trained": trained_on(history, step, device, world)}
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, **checkpoint_meta, "meta": meta, "model_config": model_config_dict(model),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": plateau.state_dict(),
                "epoch": epoch + 1, "step": step, "history": history, "train_config": asdict(cfg)})
            write_log(history, out_dir)
    model.eval()
    return history


def trained_on(history, step, device, world):
    """How long and on what a checkpoint trained (its meta["trained"]): steps, seconds summed over the
    epochs (resumed runs included), the device, processes and torch threads, and the machine."""
    return {"steps": step, "seconds": round(sum(row["seconds"] for row in history), 1),
            "device": f"{device} x {world} process(es), {torch.get_num_threads()} torch thread(s) each",
            "machine": " ".join(filter(None, (platform.machine(), platform.processor()))) + f", {os.cpu_count()} cores",
            "torch": str(torch.__version__)}


NO_SAMPLES = ("samples: every cube (or window) of the split was too small, too short or too cloudy for "
              "the sampling policy (the centre observation of a sample must be clear, Sec. III-B)")


def check_ranks_agree(model):
    """Under DDP every rank must hold the same parameters (the averaged gradients and the same optimizer
    keep them bit-identical): rank 0 saves its copy for all. A per-tensor checksum is compared across
    the ranks once per epoch; a difference stops the run instead of saving one rank's drift."""
    if not dist.is_initialized():
        return
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])       # on the rank's device
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise SystemExit("DDP ranks hold different parameters: the gradients were not averaged")


def reduce_totals(totals, count):
    """Per-rank sums of the metrics ({name: float}, samples) -> their sums over the ranks."""
    names = sorted(totals)
    summed = sum_over_ranks(torch.tensor([totals[k] for k in names] + [count], dtype=torch.float64))
    return dict(zip(names, summed[:-1].tolist())), int(summed[-1])


def to_device(batch, device):
    """A batch (tensors in dicts, tuples and lists) moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(v, device) for v in batch)


def _batch_size(batch):
    """B of a batch: the first dimension of its first tensor."""
    while not isinstance(batch, torch.Tensor):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return batch.shape[0]


@torch.no_grad()
def recalibrate_batchnorm(model, loss_fn, batches, device, n_batches=10):
    """Precise BatchNorm (Wu & Johnson 2021): replace the running statistics of the BatchNorm layers
    being trained by their plain average over n training batches. The exponential running average
    lags a fast-moving model: on small data it doubled the eval-mode centre MAE. Frozen (eval-mode)
    layers are left alone, so fusion keeps its pretrained parts bit-identical."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                               # cumulative average
    for batch, _ in zip(batches, range(n_batches)):
        loss_fn(model, to_device(batch, device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        if dist.is_initialized():                        # the ranks' averages of their shares, averaged
            for stat in (m.running_mean, m.running_var):
                dist.all_reduce(stat)
                stat /= dist.get_world_size()


@torch.no_grad()
def evaluate(model, loss_fn, batches, device):
    """Mean of every loss component over `batches`, weighted by batch size -> {name: float}."""
    model.eval()
    totals, count = {}, 0
    for batch in batches:
        batch = to_device(batch, device)
        n = _batch_size(batch)
        _, comps = loss_fn(model, batch)
        for k, v in comps.items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    totals, count = reduce_totals(totals, count)
    return {k: v / max(count, 1) for k, v in totals.items()}


def report_test(model, loss_fn, test_batches, cfg, out_dir):
    """Evaluate the held-out test cubes (Sec. IV-A2) and write OUT/test_metrics.csv."""
    metrics = evaluate(model, loss_fn, test_batches(), resolve_device(cfg.device))
    print("test | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if rank_and_world()[0] == 0:
        write_csv(Path(out_dir) / "test_metrics.csv", [["metric", "value"], *metrics.items()])
    return metrics


# ----------------------------------------------------------------------------------------------
# 3. Checkpoints: one format for every stage
# ----------------------------------------------------------------------------------------------

def save_checkpoint(path, state):
    """Atomic write: an interrupted save never leaves a half-written checkpoint behind."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, kind=None, modality=None):
    """Load with weights_only=True; one clear error for a missing, corrupt or mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SystemExit(f"checkpoint {path} cannot be read ({type(err).__name__}): corrupt or not a deepfeat checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{path} is not a {CHECKPOINT_FORMAT} file")
    if kind is not None and ckpt["kind"] != kind:
        raise SystemExit(f"{path} holds a {ckpt['kind']} model, expected a {kind} model")
    if modality is not None and ckpt["model_config"].get("modality") != modality:
        raise SystemExit(f"{path} holds the {ckpt['model_config'].get('modality')} autoencoder, "
                         f"expected the {modality} one")
    return ckpt


def model_config_dict(model):
    """The config saved in a checkpoint; enough to rebuild the model with `build_model`."""
    if isinstance(model, FusionModel):
        return {"fusion": asdict(model.cfg),
                "autoencoders": {m: asdict(ae.cfg) for m, ae in model.autoencoders.items()}}
    return asdict(model.cfg)


def build_model(kind, model_config):
    """Rebuild a model from a checkpoint's kind and config (no weights)."""
    if kind == "autoencoder":
        return ModalityAutoencoder(AutoencoderConfig(**model_config))
    if kind == "fusion":
        aes = {m: ModalityAutoencoder(AutoencoderConfig(**c)) for m, c in model_config["autoencoders"].items()}
        return FusionModel(aes, FusionConfig(**model_config["fusion"]))
    if kind == "gpp":
        return GPPTransformer(GPPConfig(**model_config))
    raise SystemExit(f"unknown model kind {kind!r}")


def load_model(path, kind=None, modality=None, bands=None):
    """Checkpoint -> model in eval mode with its weights. `bands` checks the band list matches."""
    ckpt = load_checkpoint(path, kind, modality)
    model = build_model(ckpt["kind"], ckpt["model_config"])
    if bands is not None and tuple(model.cfg.bands) != tuple(bands):
        raise SystemExit(f"{path} was trained on bands {model.cfg.bands}, not {tuple(bands)}")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise SystemExit(f"weights in {path} do not match its config: {str(err).splitlines()[0]}")
    return model.eval(), ckpt


# ----------------------------------------------------------------------------------------------
# 4. Logs: OUT/log.csv and the loss curves (Fig. 5)
# ----------------------------------------------------------------------------------------------

def write_log(history, out_dir):
    """OUT/log.csv (atomic) and OUT/loss_curves.png: train vs val per component, like Fig. 5."""
    keys = sorted({k for row in history for k in row}, key=lambda k: (k not in ("epoch", "step", "lr", "seconds"), k))
    write_csv(Path(out_dir) / "log.csv", history, keys)
    plot_history(history, Path(out_dir) / "loss_curves.png")


def plot_history(history, path):
    """Train (solid) and val (dashed) of each loss component against the epoch, one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = ([k for k in ("centre_mae", "sam", "context_mae", "ssim") if f"val_{k}" in history[0]]
             or sorted(k[4:] for k in history[0] if k.startswith("val_")))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, name in zip(axes[0], names):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(epochs, [row.get(f"{split}_{name}", np.nan) for row in history], style, label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0][0].legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
