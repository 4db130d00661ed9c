"""train_fusion.py: fuse the frozen S1 and S2 autoencoders into a 7-d embedding (Sec. III-C, Eq. 6-8).

Loads the two pretrained checkpoints, freezes them (no gradients, eval mode), and trains only the
fusion layers on aligned S1/S2 patches (S1 matched to the closest S2 date; 20-frame sequences,
strides 17/9). Context weights use centre weight 1.5 (S1) and 1.75 (S2). After training it checks
that every frozen tensor is bit-identical to the pretrained checkpoints (`--unfreeze`: the
ablation that fine-tunes everything jointly instead).

    python train_fusion.py --quick       # after train_s1.py --quick and train_s2.py --quick, ~4 min
    python train_fusion.py --cubes /data/cubes --s1-checkpoint runs/s1/checkpoint.pt \\
        --s2-checkpoint runs/s2/checkpoint.pt --device cuda --out runs/fusion

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png, OUT/test_metrics.csv.
"""
from pathlib import Path

import torch

import data
import losses
import readers
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
    train.add_common_args(parser, out="runs/fusion")
    parser.add_argument("--s1-checkpoint", default="runs/s1/checkpoint.pt",
                        help="pretrained S1 autoencoder (default runs/s1/checkpoint.pt)")
    parser.add_argument("--s2-checkpoint", default="runs/s2/checkpoint.pt",
                        help="pretrained S2 autoencoder (default runs/s2/checkpoint.pt)")
    data.add_mask_arg(parser)
    parser.add_argument("--fused-dim", type=data.positive_int, default=7, help="fused embedding size (default 7, Sec. III-C)")
    parser.add_argument("--centre-weight", type=float, nargs=2, default=None, metavar=("S1", "S2"),
                        help="Eq. 1 centre weight of each modality in the fusion loss (default "
                             f"{losses.FUSION_CENTRE_WEIGHT['s1']} {losses.FUSION_CENTRE_WEIGHT['s2']}, Sec. III-C; "
                             "1 1 keeps the pretraining kernel)")
    parser.add_argument("--unfreeze", action="store_true",
                        help="fine-tune the pretrained autoencoders jointly with the fusion layers (the ablation "
                             "of the staged training; default: frozen, as the paper)")
    args = parser.parse_args(argv)
    checkpoints = {"s1": args.s1_checkpoint, "s2": args.s2_checkpoint}
    for m, path in checkpoints.items():
        if not Path(path).is_file():
            parser.error(f"--{m}-checkpoint {path}: not found (train it first with train_{m}.py)")
    cfg, sampling, sizes = train.start_stage(args, data.FUSION_SAMPLING, train.QUICK_FUSION, train.QUICK_FUSION_TRAINING)
    # data: S1 matched to the S2 dates (Sec. III-C), patches drawn where the S2 centre is clear
    autoencoders = {m: train.load_model(path, "autoencoder", m)[0] for m, path in checkpoints.items()}
    cubes, splits = train.main_rank_first(lambda: readers.load_splits(
        args.cubes, "fusion", cfg.split_seed, autoencoders["s2"].cfg.bands, args.mask_var, args.tile, train.cache_dir(args)))
    batches = train.split_batches(cubes, sampling, "s2", cfg)
    # model: the frozen autoencoders and new fusion layers (only those are trained, unless --unfreeze)
    model = FusionModel(autoencoders, FusionConfig(fused_dim=args.fused_dim, **sizes))
    if args.unfreeze:
        model.unfreeze()
    # loss: Eq. 8, each modality weighted by its Eq. 1 kernel with the raised fusion centre weight
    centre_weight = dict(zip(checkpoints, args.centre_weight)) if args.centre_weight else losses.FUSION_CENTRE_WEIGHT
    weights = {m: train.context_weights_from_args(args, centre_weight[m]) for m in checkpoints}
    loss_fn = train.fusion_loss_fn(weights)
    train.fit(model, model.trainable_parameters(), loss_fn, batches["train"], batches["val"], cfg, args.out,
              {"kind": "fusion", "meta": {"splits": splits, "pretrained": checkpoints, "unfrozen": args.unfreeze,
                                          "loss": {**train.kernel_meta(args), "centre_weight": centre_weight},
                                          "command": ["train_fusion.py", *args.argv], "seed": cfg.seed}},
              resume=args.resume, test_batches=batches["test"] if args.log_test else None)
    if not args.unfreeze:
        check_frozen(model, checkpoints)
    train.report_test(model, loss_fn, batches["test"], cfg, args.out)
    train.end_distributed()


if __name__ == "__main__":
    data.run_cli(main)
