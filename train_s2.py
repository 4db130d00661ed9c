"""train_s2.py: pretrain the Sentinel-2 context-aware autoencoder (Sec. III-B, loss Eq. 5).

Ten 10-20 m bands -> 9-d latent. Patches of 15 x 15 px x 11 frames drawn from 20-frame sequences
(temporal stride 17, spatial stride 9); hybrid loss = 0.23 weighted MAE + 0.03 (1 - SSIM) + 0.74 SAM,
or with --quick the weighted MAE alone (Eq. 5 stalls at that budget; docs/learning.md).
`pretrain` below is the whole autoencoder recipe (data, model, loss, fit); train_s1.py uses it too.
A student follows one training step through this file, data.py (the sample) and train.py (`fit`).

    python train_s2.py --quick                          # sample_data/, ~10 min on a 2-core CPU
    python train_s2.py --quick --loss hybrid            # Eq. 5 at the quick budget: it stalls (docs/learning.md)
    python train_s2.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s2
    python train_s2.py --cubes ../shared/realdata/s2_l2a_romania/*.nc --bands B02 B03 B04 B08 B8A B11
        # one real area (its 10 m and 20 m files, six of the ten bands): fewer than 3 cubes are
        # cut into tiles and split by tile

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import dataclasses
import functools

import data
import losses
import readers
import train
from deepfeat import AutoencoderConfig, ModalityAutoencoder


def pretrain(args, model_cfg, sampling, objective, loss_meta=None, mask_var=None):
    """One modality's pretraining stage (Sec. III-B): cubes -> patches -> autoencoder -> fit -> test.

    `objective(recon, x, valid, weights)` is the stage's loss (losses.s1_loss, losses.s2_loss);
    `loss_meta` (e.g. the Eq. 5 lambdas) is stored in the checkpoint beside the Eq. 1 kernel;
    `mask_var` is S2's cloud mask (--mask-var, readers.prepare_s2)."""
    cfg, sampling, sizes = train.start_stage(args, sampling, train.QUICK_AUTOENCODER)
    m = model_cfg.modality
    # data: cubes split by cube (Sec. II), 15 x 15 px x 11-frame patches redrawn every epoch (Sec. III-B)
    cubes, splits = train.main_rank_first(lambda: readers.load_splits(
        args.cubes, m, cfg.split_seed, model_cfg.bands, mask_var, args.tile, train.cache_dir(args)))
    batches = train.split_batches(cubes, sampling, m, cfg)
    # model: the context-aware autoencoder (Sec. III-B), decoder output started at the band means
    model = ModalityAutoencoder(dataclasses.replace(model_cfg, **sizes))
    train.init_output_bias(model, batches["train"])
    # loss: the objective weighted by the Eq. 1 context kernel, NaN (clouds, gaps) masked out
    loss_fn = train.autoencoder_loss_fn(objective, train.context_weights_from_args(args))
    train.fit(model, model.parameters(), loss_fn, batches["train"], batches["val"], cfg, args.out,
              {"kind": "autoencoder", "meta": {"splits": splits, "loss": {**(loss_meta or {}), **train.kernel_meta(args)},
                                               "command": [f"train_{m}.py", *args.argv], "seed": cfg.seed}},
              resume=args.resume, test_batches=batches["test"] if args.log_test else None)
    metrics = train.report_test(model, loss_fn, batches["test"], cfg, args.out)
    train.end_distributed()
    return metrics


def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    train.add_common_args(parser, out="runs/s2")
    parser.add_argument("--bands", nargs="+", default=list(data.S2_BANDS),
                        help="S2 bands to train on (default the ten 10-20 m bands B02..B12)")
    data.add_mask_arg(parser)
    parser.add_argument("--latent-dim", type=data.positive_int, default=9, help="latent size (default 9, Sec. III-B)")
    parser.add_argument("--loss", choices=("hybrid", "balanced", "mae"), default=None,
                        help="hybrid: Eq. 5 (default); mae: the context-weighted MAE alone (lambdas 1, 0, 0; the "
                             f"default with --quick, train.QUICK_S2_LOSS: Eq. 5 stalls at that budget, "
                             "docs/learning.md); balanced: Eq. 5's terms as lambda * log(term), each counted by its "
                             "relative change (losses.s2_loss)")
    parser.add_argument("--lambdas", type=float, nargs=3, default=None, metavar=("MAE", "SSIM", "SAM"),
                        help=f"Eq. 5 weights of the hybrid loss (default {' '.join(map(str, losses.S2_LAMBDAS))})")
    args = parser.parse_args(argv)
    loss = args.loss or (train.QUICK_S2_LOSS if args.quick else "hybrid")
    if loss == "mae" and args.lambdas is not None:
        parser.error("--lambdas sets the hybrid loss; --loss mae is lambdas 1 0 0 (give --loss hybrid)")
    lambdas = (1.0, 0.0, 0.0) if loss == "mae" else tuple(args.lambdas or losses.S2_LAMBDAS)
    pretrain(args, AutoencoderConfig("s2", tuple(args.bands), args.latent_dim), data.S2_SAMPLING,
             functools.partial(losses.s2_loss, lambdas=lambdas, balanced=loss == "balanced"),
             {"loss": loss, "lambdas": lambdas}, args.mask_var)


if __name__ == "__main__":
    data.run_cli(main)
