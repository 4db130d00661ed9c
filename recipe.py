"""recipe.py: how the stages train: the presets, the shared flags, batches of patches, the loss
adapters, and the pretraining of one modality (Sec. III-B).

train_s1.py and train_s2.py are `pretraining_command` with their modality (modalities.py); a new
modality pretrains the same way. train_fusion.py (Sec. III-C) and gpp.py (Sec. IV-C) take their flags,
presets and batches from here too. The loop itself is train.fit, which knows none of this.

Reading order: 1. the presets (one table)  2. the flags the stages share (the one place the preset
meets a command line: a flag given explicitly always wins)  3. batches of patches (Sec. III-B sampling,
redrawn every epoch)  4. loss adapters: loss_fn(model, batch) for `fit`  5. pretraining a modality.
"""
import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

import data
import losses
import modalities
import train
from deepfeat import AutoencoderConfig, ModalityAutoencoder

# ----------------------------------------------------------------------------------------------
# 1. The presets: the paper's settings and --quick, per stage
# ----------------------------------------------------------------------------------------------

# The paper's training settings (authors' code), and --quick, the CPU preset: the same architecture,
# narrower and shallower (conv width 8, d_model 64, one transformer layer, no dropout); batches of 8 (on
# 2 cores a step of 8 costs ~1/3 of a step of 32 and learns about as much: learning here is counted in
# steps); lr 1e-3 after 100 warm-up steps, then a cosine decay over the run (docs/learning.md); spatial
# stride 5 (overlapping patches: the sample cubes are small). Fusion trains only its small layers on
# frozen autoencoders: its val curve is flat by ~1000 steps. GPP (Sec. IV-C): one synthetic site has 86
# training windows at stride 10; every second day gives it ~5x more (about the paper's nine sites at
# stride 10) and a validation set large enough to compare on. gpp.py, reproduce.py and bench.py read
# this table; a flag given on the command line always wins (`resolve`). The quick autoencoders take the
# centre path (deepfeat.ModalityAutoencoder): without it they learn to interpolate the centre from its
# context at this budget instead of carrying it (docs/learning.md).
PAPER = dict(epochs=30, max_steps=None, batch_size=32, lr=1e-4, warmup_steps=30000, schedule="plateau", s_stride=None)
QUICK = dict(epochs=100000, max_steps=6000, batch_size=8, lr=1e-3, warmup_steps=100, schedule="cosine", s_stride=5)
PRESETS = {
    "paper": {"autoencoder": {**PAPER, "model": {}}, "fusion": {**PAPER, "model": {}},
              "gpp": dict(epochs=100, stride=10, d_model=64, batch_size=32, lr=1e-3)},
    "quick": {"autoencoder": {**QUICK, "model": dict(width=8, token_channels=4, n_heads=4, n_layers=1, dropout=0.0,
                                                      centre_path=True)},
              "fusion": {**QUICK, "max_steps": 1500, "model": dict(d_model=32, n_heads=4, n_layers=1, dropout=0.0)},
              "gpp": dict(epochs=15, stride=2, d_model=32, batch_size=32, lr=1e-3)},
}


def resolve(args, stage):
    """The stage's settings: each flag as given on the command line (not None), else the preset's value
    (PRESETS["quick"] with --quick, else PRESETS["paper"]). The one rule of every stage."""
    preset = PRESETS["quick" if args.quick else "paper"][stage]
    return {k: v if getattr(args, k, None) is None else getattr(args, k) for k, v in preset.items()}


# ----------------------------------------------------------------------------------------------
# 2. Flags shared by the stages (one helper, so they cannot drift)
# ----------------------------------------------------------------------------------------------

def add_common_args(parser, out):
    parser.add_argument("--cubes", "--cube", nargs="+", default=["sample_data"],
                        help="cube files or folders (default sample_data); split 75/17/8 %% by cube (Sec. II), by "
                             "tile when fewer than 3 cubes are given (see --tile)")
    parser.add_argument("--tile", type=data.int_at_least(data.PATCH), default=None, metavar="PX",
                        help=f"cut every cube into PX x PX tiles, {data.TILE_GAP} px apart, and split by tile "
                             f"(default: only with fewer than 3 cubes, {data.TILE_SIZE} px)")
    parser.add_argument("--epochs", type=data.positive_int, default=None,
                        help=f"training epochs (default {PAPER['epochs']}; {QUICK['epochs']} with --quick)")
    parser.add_argument("--batch-size", type=data.positive_int, default=None,
                        help=f"patches per batch (default {PAPER['batch_size']}; {QUICK['batch_size']} "
                             "with --quick)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak AdamW learning rate (default {PAPER['lr']:g}, the authors' code; "
                             f"{QUICK['lr']:g} with --quick)")
    parser.add_argument("--weight-decay", type=float, default=1.5e-4, help="AdamW weight decay (default 1.5e-4)")
    parser.add_argument("--warmup-steps", type=data.int_at_least(0), default=None,
                        help=f"linear warm-up steps from 0.001 x lr (default {PAPER['warmup_steps']} as in the "
                             f"authors' code; {QUICK['warmup_steps']} with --quick)")
    parser.add_argument("--schedule", choices=("plateau", "cosine"), default=None,
                        help="learning rate after the warm-up: plateau = ReduceLROnPlateau on the val centre MAE once "
                             "per epoch (default, the authors' code); cosine = decay to 1.5e-6 over the run's steps "
                             "(default with --quick: short epochs starve a plateau patience counted in epochs)")
    parser.add_argument("--max-steps", type=data.positive_int, default=None,
                        help=f"stop after this many optimiser steps (default: no limit; {QUICK['max_steps']} "
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
                        help=f"spatial sampling stride in pixels (default: the paper's, 15 for S1, 9 for S2 and fusion; "
                             f"{QUICK['s_stride']} with --quick)")
    parser.add_argument("--kernel-alpha", type=float, default=0.1,
                        help="Eq. 1 decay per frame and per pixel ring (default 0.1, the authors' steep kernel; "
                             "1 with --kernel-ring 1: a flat kernel)")
    parser.add_argument("--kernel-ring", type=float, default=0.01,
                        help="Eq. 1 weight of the first pixel ring relative to the centre (default 0.01)")
    parser.add_argument("--log-test", action="store_true",
                        help="also score the test split after every epoch, for learning curves (default: at the end "
                             "only; the schedule never reads it)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU preset (recipe.PRESETS['quick']): a small model and "
                             f"{QUICK['max_steps']} steps ({PRESETS['quick']['fusion']['max_steps']} for fusion), "
                             f"batches of {QUICK['batch_size']} at lr {QUICK['lr']:g}, cosine "
                             f"schedule, spatial stride {QUICK['s_stride']}; a flag given explicitly wins over the preset")


def start_stage(args, sampling, stage):
    """Everything a stage ("autoencoder" or "fusion") takes from the common flags, before any data is read.

    Checks that OUT is writable (and holds a checkpoint for --resume), joins DDP under torchrun, seeds
    torch, and returns (TrainConfig, the Sec. III-B sampling with the stride of --s-stride or the
    preset, the model sizes of the preset)."""
    prepare_output(args.out, args.resume)
    settings = resolve(args, stage)
    cfg = train.TrainConfig(**{k: settings[k] for k in ("epochs", "max_steps", "batch_size", "lr", "warmup_steps",
                                                          "schedule")},
                            weight_decay=args.weight_decay, seed=args.seed, split_seed=args.split_seed,
                            device=args.device, workers=args.workers, amp=args.amp)
    train.init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    if settings["s_stride"]:
        sampling = dataclasses.replace(sampling, s_stride=settings["s_stride"])
    return cfg, sampling, settings["model"]


def cache_dir(args):
    """--cache, or OUT/cache: where modalities.load_splits writes the prepared cubes."""
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


def context_weights_from_args(args, sampling, centre_weight=1.0):
    """The Eq. 1 kernel of --kernel-alpha and --kernel-ring (losses.context_weights) for the samples of
    `sampling`, (T, H, W)."""
    return losses.context_weights(sampling.n_frames, sampling.patch, sampling.patch, alpha=args.kernel_alpha,
                                  ring_weight=args.kernel_ring, centre_weight=centre_weight)


def kernel_meta(args):
    """The Eq. 1 flags as stored in a checkpoint's meta["loss"]."""
    return {"kernel_alpha": args.kernel_alpha, "kernel_ring": args.kernel_ring}


# ----------------------------------------------------------------------------------------------
# 3. Batches of patches (Sec. III-B sampling, redrawn every epoch)
# ----------------------------------------------------------------------------------------------

def open_array(array):
    """A cube's (T, C, H, W) float32 array: in memory, or a prepared .npy (modalities.cache_cube) mapped
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
    rank, world = train.rank_and_world()
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
# 4. Loss adapters: loss_fn(model, batch) -> (loss, {component: scalar}), what `fit` calls
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
    """loss_fn for fusion: reconstruct every modality through the fused bottleneck, Eq. 8, each with
    its modality's term (modalities.py) and Eq. 1 weights `weights[m]`."""
    terms = {m: modalities.get(m).fusion_term for m in weights}

    def loss_fn(model, batch):
        recon, _ = model(batch)
        targets = {m: x for m, (x, _) in batch.items()}                 # {m: (B, T, C, H, W)}
        valids = {m: torch.isfinite(x) for m, x in targets.items()}
        with torch.autocast(next(iter(targets.values())).device.type, enabled=False):
            return losses.fusion_loss({m: r.float() for m, r in recon.items()}, targets, valids,
                                      {m: w.to(targets[m].device) for m, w in weights.items()}, terms)
    return loss_fn


@torch.no_grad()
def init_output_bias(model, batches):
    """Start the decoder's output at each band's mean over one training batch (data-dependent init):
    otherwise the first ~100 steps only move the output from 0 to the reflectance level."""
    first = next(iter(batches(0)), None)
    if first is None:
        raise SystemExit(f"no training {train.NO_SAMPLES}")
    (x, _), = first.values()                                            # (B, T, C, H, W) with NaN
    values = x.transpose(0, 2).flatten(1).double()                      # (C, B*T*H*W)
    sums = train.sum_over_ranks(torch.stack([values.nansum(1), values.isfinite().sum(1).double()]))  # (2, C)
    model.dec_out.bias.copy_(torch.nan_to_num(sums[0] / sums[1]))


# ----------------------------------------------------------------------------------------------
# 5. Pretraining a modality (Sec. III-B): train_s1.py, train_s2.py, and any registered modality
# ----------------------------------------------------------------------------------------------

def pretrain(args, modality):
    """One modality's pretraining stage (Sec. III-B): cubes -> patches -> autoencoder -> fit -> test.

    Everything modality-specific comes from its entry (modalities.Modality): bands, reader, sampling,
    latent size, model sizes, objective (with its own flags, e.g. S2's Eq. 5 lambdas)."""
    cfg, sampling, sizes = start_stage(args, modality.sampling, "autoencoder")
    objective, loss_meta = (modality.objective_from_flags(args) if modality.objective_from_flags
                            else (modality.objective, {}))
    m, bands = modality.name, tuple(args.bands or modality.bands)
    # data: cubes split by cube (Sec. II), 15 x 15 px x 11-frame patches redrawn every epoch (Sec. III-B)
    cubes, splits = train.main_rank_first(lambda: modalities.load_splits(
        args.cubes, m, cfg.split_seed, {m: bands}, getattr(args, "mask_var", None), args.tile, cache_dir(args)))
    batches = split_batches(cubes, sampling, m, cfg)
    # model: the context-aware autoencoder (Sec. III-B), decoder output started at the band means
    if args.centre_path is not None:
        sizes = {**sizes, "centre_path": args.centre_path}
    model = ModalityAutoencoder(AutoencoderConfig(m, bands, args.latent_dim or modality.latent_dim,
                                                  n_frames=sampling.n_frames, patch=sampling.patch,
                                                  **{**modality.model, **sizes}))
    init_output_bias(model, batches["train"])
    # loss: the objective weighted by the Eq. 1 context kernel, NaN (clouds, gaps) masked out
    loss_fn = autoencoder_loss_fn(objective, context_weights_from_args(args, sampling))
    train.fit(model, model.parameters(), loss_fn, batches["train"], batches["val"], cfg, args.out,
              {"kind": "autoencoder", "meta": {"splits": splits, "loss": {**loss_meta, **kernel_meta(args)},
                                               "command": [f"train_{m}.py", *args.argv], "seed": cfg.seed}},
              resume=args.resume, test_batches=batches["test"] if args.log_test else None)
    metrics = train.report_test(model, loss_fn, batches["test"], cfg, args.out)
    train.end_distributed()
    return metrics


def pretraining_command(name, argv=None, description=None):
    """The command line of one modality's pretraining: the common flags, --bands, --latent-dim, and the
    modality's own (--mask-var for a modality with a cloud mask, S2's --loss and --lambdas)."""
    modality = modalities.get(name)
    parser = data.ArgumentParser(description=description or f"Pretrain the {name} autoencoder (Sec. III-B).")
    add_common_args(parser, out=f"runs/{name}")
    parser.add_argument("--bands", nargs="+", default=None,
                        help=f"bands to train on (default {' '.join(modality.bands)})")
    parser.add_argument("--latent-dim", type=data.positive_int, default=None,
                        help=f"latent size (default {modality.latent_dim}, Sec. III-B)")
    parser.add_argument("--centre-path", action=argparse.BooleanOptionalAction, default=None,
                        help="a linear path between each frame's token and its central pixel (deepfeat.ModalityAutoencoder; "
                             "default: off, the paper's architecture; on with --quick)")
    if modality.uses_mask:
        data.add_mask_arg(parser)
    if modality.add_flags:
        modality.add_flags(parser)
    return pretrain(parser.parse_args(argv), modality)
