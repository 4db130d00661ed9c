"""train_fusion.py: fuse the frozen S1 and S2 autoencoders into a 7-d embedding (Sec. III-C, Eq. 6-8).

Loads the two pretrained checkpoints, freezes them (no gradients, eval mode), and trains only the
fusion layers on aligned S1/S2 patches (S1 matched to the closest S2 date; 20-frame sequences,
strides 17/9). Context weights use centre weight 1.5 (S1) and 1.75 (S2). After training it checks
that every frozen tensor is bit-identical to the pretrained checkpoints (`--unfreeze`: the
ablation that fine-tunes everything jointly instead).

    python train_fusion.py --quick       # after train_s1.py --quick and train_s2.py --quick, ~1 min
    python train_fusion.py --cubes /data/cubes --s1-checkpoint runs/s1/checkpoint.pt \\
        --s2-checkpoint runs/s2/checkpoint.pt --device cuda --out runs/fusion

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png, OUT/test_metrics.csv.
"""
from pathlib import Path

import torch

import data
import losses
import train
from deepfeat import FusionConfig, FusionModel


def fusion_loss_fn(weights):
    """loss_fn for fusion: reconstruct every modality through the fused bottleneck, Eq. 8."""
    def loss_fn(model, batch):
        recon, _ = model(batch)
        targets = {m: x for m, (x, _) in batch.items()}                 # {m: (B, T, C, H, W)}
        valids = {m: torch.isfinite(x) for m, x in targets.items()}
        return losses.fusion_loss(recon, targets, valids, {m: w.to(targets[m].device) for m, w in weights.items()})
    return loss_fn


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
    parser.add_argument("--unfreeze", action="store_true",
                        help="fine-tune the pretrained autoencoders jointly with the fusion layers (the ablation "
                             "of the staged training; default: frozen, as the paper)")
    args = parser.parse_args(argv)
    cfg = train.train_config_from_args(args)
    torch.manual_seed(cfg.seed)

    checkpoints = {"s1": args.s1_checkpoint, "s2": args.s2_checkpoint}
    for m, path in checkpoints.items():
        if not Path(path).is_file():
            parser.error(f"--{m}-checkpoint {path}: not found (train it first with train_{m}.py)")
    autoencoders = {m: train.load_model(path, "autoencoder", m)[0] for m, path in checkpoints.items()}
    train_b, val_b, test_b, splits = train.stage_batches(args, "fusion", data.FUSION_SAMPLING, "s2", cfg,
                                                         bands=autoencoders["s2"].cfg.bands)
    sizes = train.QUICK_FUSION if args.quick else {}
    model = FusionModel(autoencoders, FusionConfig(fused_dim=args.fused_dim, **sizes))
    if args.unfreeze:
        model.unfreeze()
    weights = {m: train.context_weights_from_args(args, losses.FUSION_CENTRE_WEIGHT[m]) for m in checkpoints}
    loss_fn = fusion_loss_fn(weights)
    train.fit(model, model.trainable_parameters(), loss_fn, train_b, val_b, cfg, args.out,
              {"kind": "fusion", "meta": {"splits": splits, "pretrained": checkpoints, "unfrozen": args.unfreeze,
                                          "loss": {"kernel_alpha": args.kernel_alpha, "kernel_ring": args.kernel_ring}}},
              resume=args.resume)
    if not args.unfreeze:
        check_frozen(model, checkpoints)
    train.report_test(model, loss_fn, test_b, cfg, args.out)


if __name__ == "__main__":
    data.run_cli(main)
