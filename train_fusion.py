"""train_fusion.py: fuse the frozen S1 and S2 autoencoders into a 7-d embedding (Sec. III-C, Eq. 6-8).

Loads the pretrained checkpoints (S1 and S2, plus any `--checkpoint NAME=PATH` of a registered
modality), freezes them (no gradients, eval mode), and trains only the fusion layers on aligned
patches: every modality matched to the closest date of the reference (S2), sampled like the
reference (20-frame sequences, strides 17/9). Each modality's term of Eq. 8 and its Eq. 1 centre
weight (1.5 S1, 1.75 S2) come from its entry in modalities.py. After training it checks that every
frozen tensor is bit-identical to the pretrained checkpoints (`--unfreeze`: the ablation that
fine-tunes everything jointly instead).

    python train_fusion.py --quick       # after train_s1.py --quick and train_s2.py --quick, ~4 min
    python train_fusion.py --cubes /data/cubes --s1-checkpoint runs/s1/checkpoint.pt \\
        --s2-checkpoint runs/s2/checkpoint.pt --device cuda --out runs/fusion
    python train_fusion.py --quick --checkpoint l8=runs/l8/checkpoint.pt    # a third, registered modality

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png, OUT/test_metrics.csv.
"""
from pathlib import Path

import torch

import data
import modalities
import recipe
import train
from deepfeat import FusionConfig, FusionModel


def check_frozen(model, checkpoints):
    """Every pretrained tensor (weights and BatchNorm statistics) must equal its checkpoint, bit for bit."""
    for m, path in checkpoints.items():
        saved = train.load_checkpoint(path)["model"]
        for name, tensor in model.autoencoders[m].state_dict().items():
            if not torch.equal(tensor.cpu(), saved[name]):
                raise SystemExit(f"frozen {m} tensor {name} changed during fusion training")
    print("frozen autoencoders are bit-identical to " + ", ".join(map(str, checkpoints.values())))


def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    recipe.add_common_args(parser, out="runs/fusion")
    parser.add_argument("--s1-checkpoint", default="runs/s1/checkpoint.pt",
                        help="pretrained S1 autoencoder (default runs/s1/checkpoint.pt)")
    parser.add_argument("--s2-checkpoint", default="runs/s2/checkpoint.pt",
                        help="pretrained S2 autoencoder (default runs/s2/checkpoint.pt)")
    parser.add_argument("--checkpoint", nargs="+", type=data.name_value(str), default=[], metavar="NAME=PATH",
                        help="pretrained autoencoders of further registered modalities (modalities.py), fused with S1 "
                             "and S2 (default: none)")
    data.add_mask_arg(parser)
    parser.add_argument("--fused-dim", type=data.positive_int, default=7, help="fused embedding size (default 7, Sec. III-C)")
    parser.add_argument("--centre-weight", nargs="+", type=data.name_value(float), default=[], metavar="NAME=W",
                        help="Eq. 1 centre weight of a modality in the fusion loss (default: its entry's, Sec. III-C: "
                             "s1=1.5 s2=1.75; s1=1 s2=1 keeps the pretraining kernel)")
    parser.add_argument("--unfreeze", action="store_true",
                        help="fine-tune the pretrained autoencoders jointly with the fusion layers (the ablation "
                             "of the staged training; default: frozen, as the paper)")
    args = parser.parse_args(argv)
    given = {"s1": args.s1_checkpoint, "s2": args.s2_checkpoint, **dict(args.checkpoint)}
    checkpoints = {m: given[m] for m in modalities.fusion_order(list(given))}
    for m, path in checkpoints.items():
        if not Path(path).is_file():
            flag = f"--{m}-checkpoint" if m in ("s1", "s2") else f"--checkpoint {m}="
            parser.error(f"{flag} {path}: not found (train it first with train_{m}.py)")
    centre_weight = {m: modalities.get(m).fusion_centre_weight for m in checkpoints}
    for m, w in args.centre_weight:
        if m not in checkpoints:
            parser.error(f"--centre-weight {m}={w}: {m} is not fused (fused: {', '.join(checkpoints)})")
        centre_weight[m] = w
    ref = modalities.get(list(checkpoints)[-1])
    cfg, sampling, sizes = recipe.start_stage(args, ref.sampling, "fusion")
    # data: every modality matched to the reference dates (Sec. III-C), patches where the reference centre is clear
    autoencoders = {m: train.load_model(path, "autoencoder", m)[0] for m, path in checkpoints.items()}
    bands = {m: ae.cfg.bands for m, ae in autoencoders.items()}
    cubes, splits = train.main_rank_first(lambda: modalities.load_splits(
        args.cubes, tuple(checkpoints), cfg.split_seed, bands, args.mask_var, args.tile, recipe.cache_dir(args)))
    batches = recipe.split_batches(cubes, sampling, ref.name, cfg)
    # model: the frozen autoencoders and new fusion layers (only those are trained, unless --unfreeze)
    model = FusionModel(autoencoders, FusionConfig(modalities=tuple(checkpoints), fused_dim=args.fused_dim, **sizes))
    if args.unfreeze:
        model.unfreeze()
    # loss: Eq. 8, each modality's term weighted by its Eq. 1 kernel with the raised fusion centre weight
    weights = {m: recipe.context_weights_from_args(args, sampling, centre_weight[m]) for m in checkpoints}
    loss_fn = recipe.fusion_loss_fn(weights)
    train.fit(model, model.trainable_parameters(), loss_fn, batches["train"], batches["val"], cfg, args.out,
              {"kind": "fusion", "meta": {"splits": splits, "pretrained": checkpoints, "unfrozen": args.unfreeze,
                                          "loss": {**recipe.kernel_meta(args), "centre_weight": centre_weight},
                                          "command": ["train_fusion.py", *args.argv], "seed": cfg.seed}},
              resume=args.resume, test_batches=batches["test"] if args.log_test else None)
    if not args.unfreeze:
        check_frozen(model, checkpoints)
    train.report_test(model, loss_fn, batches["test"], cfg, args.out)
    train.end_distributed()


if __name__ == "__main__":
    data.run_cli(main)
