"""train.py: the one training loop and the one checkpoint format, shared by every stage.

train_s2.py (the autoencoder recipe, also used by train_s1.py), train_fusion.py (Sec. III-C) and
gpp.py (Sec. IV-C) build their data, model, loss and list of trainable parameters, then call `fit`.
Freezing is which parameters go to the optimizer (plus eval mode for frozen parts), never a second
loop. Nothing here reads a source file: the stage scripts prepare their cubes with readers.py, and
the batches here are gathered from those prepared arrays (in memory or on disk).

Reading order: 1. configs and the learning rate  2. batches of patches  3. the loop (`fit`)
4. checkpoints  5. loss functions of the stages  6. the flags the stages share (the only code that
reads an argparse namespace, and the one place the --quick preset is applied)  7. logs.

Optimiser and schedule as in the authors' code (Sonicious/DeepFeatures): AdamW (lr 1e-4, weight decay
1.5e-4), linear warm-up from 0.001 x lr, then ReduceLROnPlateau on the validation centre MAE
(factor 0.35, patience 5, min lr 1.5e-6). The --quick preset replaces the plateau by a cosine decay
over its fixed number of steps (`scheduled_lr`; docs/learning.md).

Checkpoint (one format, `torch.load(..., weights_only=True)` safe: plain dicts, lists, numbers,
strings and tensors): {"format", "kind", "model_config", "model", "optimizer", "scheduler",
"epoch", "step", "history", "train_config", "meta"}. Written atomically (temp file + rename), so an
interrupted run keeps its last finished epoch and `--resume` goes on from there.

Not a script; see train_s2.py for the command line.
"""
import csv
import dataclasses
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import data
import losses
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
    exits while another still talks to it can abort the job."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
# 2. Batches of patches (Sec. III-B sampling, redrawn every epoch)
# ----------------------------------------------------------------------------------------------

def open_array(array):
    """A cube's (T, C, H, W) float32 array: in memory, or a prepared .npy (readers.cache_cube) mapped
    read-only, so that a batch reads only its own patches from disk."""
    return np.load(array, mmap_mode="r") if isinstance(array, (str, os.PathLike)) else array


OPEN_CUBES = 8


class PatchBatches(torch.utils.data.Dataset):
    """The batches of one split and epoch; item i is batch i: {modality: (x (B, T, C, H, W), days (B, T))}.

    The index (frames and corners of every patch) is drawn as data.sample_patches draws it: one rng
    seeded (seed, epoch), so a resumed run sees the same data; cubes in split order, each through
    data.patch_index and the centre check; then one permutation of all kept patches. A batch is then
    gathered from the cubes it touches: memory holds the index (~40 bytes a patch) and one batch, not
    the cubes. Under DDP (rank, world) a rank takes samples rank, rank + world, ... of each global batch,
    so the ranks together see exactly the batch one process would.
    """

    def __init__(self, cubes, sampling, key, batch_size, seed, epoch=0, shuffle=True, rank=0, world=1):
        self.cubes, self.sampling, self.batch_size, self.rank, self.world = cubes, sampling, batch_size, rank, world
        self.mapped = {}                                  # (cube, modality) -> array, the last OPEN_CUBES opened
        rng = np.random.default_rng([seed, epoch])
        cube, frames, y0, x0 = [], [], [], []
        for k, c in enumerate(cubes):
            # the key modality's (T, H, W) clear map: prepared with the cached cube, or made from the array
            clear = open_array(c["clear"][key]) if "clear" in c else data.clear_map(open_array(c["arrays"][key]))
            f, y, x = data.patch_index(*clear.shape, sampling, rng)
            keep = data.centre_is_clear(clear, f, y, x, sampling)
            cube.append(np.full(keep.sum(), k, dtype=np.int32))
            frames.append(f[keep].astype(np.int16))
            y0.append(y[keep].astype(np.int32))
            x0.append(x[keep].astype(np.int32))
        self.cube = np.concatenate(cube) if cube else np.zeros(0, np.int32)         # (N,)
        self.frames = np.concatenate(frames) if frames else np.zeros((0, sampling.n_frames), np.int16)  # (N, F)
        self.y0 = np.concatenate(y0) if y0 else np.zeros(0, np.int32)
        self.x0 = np.concatenate(x0) if x0 else np.zeros(0, np.int32)
        n = len(self.cube)
        self.order = rng.permutation(n) if shuffle else np.arange(n)

    def __len__(self):
        n = len(self.order)
        short = n % self.batch_size                     # a last batch too small to give every rank a sample is left out
        return n // self.batch_size + (short >= self.world)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
        cube = self.cube[idx]
        batch = {}
        for m in self.cubes[0]["arrays"]:
            F, C, P = self.sampling.n_frames, self.array(0, m).shape[1], self.sampling.patch
            x = np.empty((len(idx), F, C, P, P), np.float32)                       # (B, T, C, H, W)
            days = np.empty((len(idx), F), np.float64)                             # (B, T)
            for k in np.unique(cube):
                rows = np.flatnonzero(cube == k)
                frames = self.frames[idx[rows]].astype(np.int64)                   # (b, F)
                x[rows] = data.gather_patches(self.array(k, m), frames, self.y0[idx[rows]], self.x0[idx[rows]], P)
                days[rows] = self.cubes[k]["days"][m][frames]
            batch[m] = (torch.from_numpy(x), torch.from_numpy(days).float())
        return batch

    def array(self, k, m):
        """Cube k's (T, C, H, W) array of modality m. The last OPEN_CUBES stay mapped: opening costs
        about a millisecond, and a few mapped cubes bound the memory whatever the number of cubes."""
        if (k, m) not in self.mapped:
            if len(self.mapped) >= OPEN_CUBES:
                self.mapped.pop(next(iter(self.mapped)))
            self.mapped[k, m] = open_array(self.cubes[k]["arrays"][m])
        return self.mapped[k, m]


def patch_batches(cubes, sampling, key, batch_size, seed, shuffle=True, workers=0):
    """Return epoch -> iterator of batches (PatchBatches through a DataLoader with `workers`
    reader processes), the form `fit` takes. Under DDP each rank gets its share of every batch."""
    rank, world = rank_and_world()
    if batch_size < world:
        raise SystemExit(f"--batch-size {batch_size} is smaller than the {world} processes: it is the global batch, "
                         "shared between them")
    made = {}                                              # the index of the last epoch asked for, built once

    def batches(epoch=0):
        if epoch not in made:
            made.clear()
            made[epoch] = PatchBatches(cubes, sampling, key, batch_size, seed, epoch, shuffle, rank, world)
        return torch.utils.data.DataLoader(made[epoch], batch_size=None, num_workers=workers)
    return batches


def split_batches(cubes, sampling, key, cfg):
    """{split: cubes} -> {"train": epoch -> batches, "val": () -> batches, "test": () -> batches}.

    Only the training split is shuffled; val and test are the same patches at every evaluation.
    The training patches follow cfg.seed; the val and test patches follow cfg.split_seed, like the
    split itself, so runs with different seeds are scored on the same patches (paired comparisons)."""
    make = {split: patch_batches(c, sampling, key, cfg.batch_size, cfg.seed if split == "train" else cfg.split_seed,
                                 shuffle=split == "train", workers=cfg.workers)
            for split, c in cubes.items()}
    return {"train": make["train"], "val": lambda: make["val"](0), "test": lambda: make["test"](0)}


# ----------------------------------------------------------------------------------------------
# 3. The loop
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
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, **checkpoint_meta, "model_config": model_config_dict(model),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": plateau.state_dict(),
                "epoch": epoch + 1, "step": step, "history": history, "train_config": asdict(cfg)})
            write_log(history, out_dir)
    model.eval()
    return history


NO_SAMPLES = ("samples: every cube (or window) of the split was too small, too short or too cloudy for "
              "the sampling policy (data.sample_patches: the centre observation must be clear)")


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
        with open(Path(out_dir) / "test_metrics.csv", "w", newline="") as f:
            csv.writer(f).writerows([["metric", "value"], *metrics.items()])
    return metrics


# ----------------------------------------------------------------------------------------------
# 4. Checkpoints: one format for every stage
# ----------------------------------------------------------------------------------------------

def save_checkpoint(path, state):
    """Atomic write: an interrupted save never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
# 5. Loss functions of the stages: loss_fn(model, batch) -> (loss, {component: scalar})
# ----------------------------------------------------------------------------------------------

# With --amp the model runs under bf16 autocast; every loss is computed in fp32 outside it (SSIM's
# small differences of means and SAM's arccos near 1 lose their precision in bf16).

def autoencoder_loss_fn(objective, weights):
    """loss_fn for a pretraining stage: reconstruct the patch, score it with `objective` (losses.py)."""
    def loss_fn(model, batch):
        (x, days), = batch.values()                         # x (B, T, C, H, W) with NaN
        recon, _ = model(x, days)
        with torch.autocast(x.device.type, enabled=False):
            return objective(recon.float(), x, torch.isfinite(x), weights.to(x.device))
    return loss_fn


def fusion_loss_fn(weights):
    """loss_fn for fusion: reconstruct every modality through the fused bottleneck, Eq. 8."""
    def loss_fn(model, batch):
        recon, _ = model(batch)
        targets = {m: x for m, (x, _) in batch.items()}                 # {m: (B, T, C, H, W)}
        valids = {m: torch.isfinite(x) for m, x in targets.items()}
        with torch.autocast(next(iter(targets.values())).device.type, enabled=False):
            return losses.fusion_loss({m: r.float() for m, r in recon.items()}, targets, valids,
                                      {m: w.to(targets[m].device) for m, w in weights.items()})
    return loss_fn


@torch.no_grad()
def init_output_bias(model, batches):
    """Start the decoder's output at each band's mean over one training batch (data-dependent init):
    otherwise the first ~100 steps only move the output from 0 to the reflectance level."""
    first = next(iter(batches(0)), None)
    if first is None:
        raise SystemExit(f"no training {NO_SAMPLES}")
    (x, _), = first.values()                                            # (B, T, C, H, W) with NaN
    values = x.transpose(0, 2).flatten(1).double()                      # (C, B*T*H*W)
    sums = sum_over_ranks(torch.stack([values.nansum(1), values.isfinite().sum(1).double()]))  # (2, C)
    model.dec_out.bias.copy_(torch.nan_to_num(sums[0] / sums[1]))


# ----------------------------------------------------------------------------------------------
# 6. Flags shared by the three stages (one helper, so they cannot drift), and the --quick preset
# ----------------------------------------------------------------------------------------------

def add_common_args(parser, out):
    parser.add_argument("--cubes", "--cube", nargs="+", default=["sample_data"],
                        help="cube files or folders (default sample_data); split 75/17/8 %% by cube (Sec. II), by "
                             "tile when fewer than 3 cubes are given (see --tile)")
    parser.add_argument("--tile", type=data.int_at_least(data.PATCH), default=None, metavar="PX",
                        help=f"cut every cube into PX x PX tiles, {data.TILE_GAP} px apart, and split by tile "
                             f"(default: only with fewer than 3 cubes, {data.TILE_SIZE} px)")
    parser.add_argument("--epochs", type=data.positive_int, default=None,
                        help=f"training epochs (default {PAPER_TRAINING['epochs']}; {QUICK_TRAINING['epochs']} with --quick)")
    parser.add_argument("--batch-size", type=data.positive_int, default=None,
                        help=f"patches per batch (default {PAPER_TRAINING['batch_size']}; {QUICK_TRAINING['batch_size']} "
                             "with --quick)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak AdamW learning rate (default {PAPER_TRAINING['lr']:g}, the authors' code; "
                             f"{QUICK_TRAINING['lr']:g} with --quick)")
    parser.add_argument("--weight-decay", type=float, default=1.5e-4, help="AdamW weight decay (default 1.5e-4)")
    parser.add_argument("--warmup-steps", type=data.int_at_least(0), default=None,
                        help=f"linear warm-up steps from 0.001 x lr (default {PAPER_TRAINING['warmup_steps']} as in the "
                             f"authors' code; {QUICK_TRAINING['warmup_steps']} with --quick)")
    parser.add_argument("--schedule", choices=("plateau", "cosine"), default=None,
                        help="learning rate after the warm-up: plateau = ReduceLROnPlateau on the val centre MAE once "
                             "per epoch (default, the authors' code); cosine = decay to 1.5e-6 over the run's steps "
                             "(default with --quick: short epochs starve a plateau patience counted in epochs)")
    parser.add_argument("--max-steps", type=data.positive_int, default=None,
                        help=f"stop after this many optimiser steps (default: no limit; {QUICK_TRAINING['max_steps']} "
                             "with --quick)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the weights and the training patches (default 0)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed for the train/val/test split of the cubes and for the val/test patches (default 0; "
                             "kept apart from --seed so that runs of several seeds are scored on the same patches)")
    parser.add_argument("--out", default=out, help=f"output folder for checkpoint, log.csv and figures (default {out})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (default: start fresh)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="folder for the prepared cubes, read patch by patch while training (default OUT/cache; "
                             "reused when the files and flags are unchanged; share one between stages and runs)")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast of the model's forward on GPU, losses in fp32 (default: fp32)")
    parser.add_argument("--workers", type=data.int_at_least(0), default=0,
                        help="DataLoader processes reading batches (default 0: the training process reads them)")
    parser.add_argument("--s-stride", type=data.positive_int, default=None,
                        help="spatial sampling stride in pixels (default: the paper's, 15 for S1, 9 for S2 and fusion)")
    parser.add_argument("--kernel-alpha", type=float, default=0.1,
                        help="Eq. 1 decay per frame and per pixel ring (default 0.1, the authors' steep kernel; "
                             "1 with --kernel-ring 1: a flat kernel)")
    parser.add_argument("--kernel-ring", type=float, default=0.01,
                        help="Eq. 1 weight of the first pixel ring relative to the centre (default 0.01)")
    parser.add_argument("--log-test", action="store_true",
                        help="also score the test split after every epoch, for learning curves (default: at the end "
                             "only; the schedule never reads it)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU preset: a small model (QUICK_AUTOENCODER, QUICK_FUSION) and QUICK_TRAINING "
                             f"({QUICK_TRAINING['max_steps']} steps, {QUICK_FUSION_TRAINING['max_steps']} for fusion, "
                             f"batches of {QUICK_TRAINING['batch_size']} at lr {QUICK_TRAINING['lr']:g}, cosine "
                             f"schedule, spatial stride {QUICK_S_STRIDE}); a flag given explicitly wins over the preset")


# The training settings of the paper (authors' code) and of --quick, the one CPU preset of every stage:
# the same architecture, narrower and shallower (conv width 8, d_model 64, one transformer layer, no
# dropout); batches of 8 (on 2 cores a step of 8 costs ~1/3 of a step of 32 and learns about as much:
# learning here is counted in steps); lr 1e-3 after 100 warm-up steps, then a cosine decay over the run
# (docs/learning.md); spatial stride 5 (overlapping patches: the sample cubes are small). A flag given
# on the command line always wins: the preset only fills the flags left at None.
PAPER_TRAINING = dict(epochs=30, max_steps=None, batch_size=32, lr=1e-4, warmup_steps=30000, schedule="plateau")
QUICK_TRAINING = dict(epochs=100000, max_steps=6000, batch_size=8, lr=1e-3, warmup_steps=100, schedule="cosine")
# S2's objective at the --quick budget: the weighted MAE alone. Eq. 5 as written stalls there at a centre
# MAE between the constant spectrum and each pixel's temporal mean; so does any mix that keeps its SSIM
# (0.03) or SAM (0.74) term, whose gradients match or outweigh the MAE's (docs/learning.md).
QUICK_S2_LOSS = "mae"
QUICK_AUTOENCODER = dict(width=8, token_channels=4, n_heads=4, n_layers=1, dropout=0.0)
QUICK_FUSION = dict(d_model=32, n_heads=4, n_layers=1, dropout=0.0)
# fusion trains only its small layers on frozen autoencoders: its val curve is flat by ~1000 steps
QUICK_FUSION_TRAINING = {**QUICK_TRAINING, "max_steps": 1500}
QUICK_S_STRIDE = 5


def train_config_from_args(args, quick=QUICK_TRAINING):
    """TrainConfig from the common flags: each flag as given, else the preset's value (`quick` with
    --quick, QUICK_TRAINING or QUICK_FUSION_TRAINING) or the paper's."""
    preset = quick if args.quick else PAPER_TRAINING
    given = {k: getattr(args, k) for k in preset if getattr(args, k) is not None}
    return TrainConfig(**{**preset, **given}, weight_decay=args.weight_decay, seed=args.seed,
                       split_seed=args.split_seed, device=args.device, workers=args.workers, amp=args.amp)


def start_stage(args, sampling, sizes, quick=QUICK_TRAINING):
    """Everything a stage takes from the common flags, before any data is read.

    Checks that OUT is writable (and holds a checkpoint for --resume), seeds torch, and returns
    (TrainConfig, the Sec. III-B sampling with --s-stride applied, the model size overrides):
    `sizes` and `quick` are the stage's quick size (QUICK_AUTOENCODER or QUICK_FUSION) and training
    preset, used with --quick only."""
    prepare_output(args.out, args.resume)
    cfg = train_config_from_args(args, quick)
    init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    s_stride = args.s_stride or (QUICK_S_STRIDE if args.quick else None)
    if s_stride:
        sampling = dataclasses.replace(sampling, s_stride=s_stride)
    return cfg, sampling, (sizes if args.quick else {})


def cache_dir(args):
    """--cache, or OUT/cache: where readers.load_splits writes the prepared cubes."""
    return Path(args.cache) if args.cache else Path(args.out) / "cache"


def prepare_output(out_dir, resume):
    """Check OUT before any work: writable, and holding a checkpoint when --resume asks for one."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}.tmp"                 # own name: DDP ranks probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise data.InputError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    if resume and not (out / "checkpoint.pt").is_file():
        raise data.InputError(f"--resume: {out / 'checkpoint.pt'} not found (run without --resume to start)")


def context_weights_from_args(args, centre_weight=1.0):
    """The Eq. 1 kernel of --kernel-alpha and --kernel-ring (losses.context_weights), (T, H, W)."""
    return losses.context_weights(alpha=args.kernel_alpha, ring_weight=args.kernel_ring, centre_weight=centre_weight)


def kernel_meta(args):
    """The Eq. 1 flags as stored in a checkpoint's meta["loss"]."""
    return {"kernel_alpha": args.kernel_alpha, "kernel_ring": args.kernel_ring}


# ----------------------------------------------------------------------------------------------
# 7. Logs: OUT/log.csv and the loss curves (Fig. 5)
# ----------------------------------------------------------------------------------------------

def write_log(history, out_dir):
    """OUT/log.csv (atomic) and OUT/loss_curves.png: train vs val per component, like Fig. 5."""
    keys = sorted({k for row in history for k in row}, key=lambda k: (k not in ("epoch", "step", "lr", "seconds"), k))
    tmp = Path(out_dir) / "log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, Path(out_dir) / "log.csv")
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
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
