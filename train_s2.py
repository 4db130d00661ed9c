"""train_s2.py: pretrain the Sentinel-2 context-aware autoencoder (Sec. III-B, loss Eq. 5).

Ten 10-20 m bands -> 9-d latent. Patches of 15 x 15 px x 11 frames drawn from 20-frame sequences
(temporal stride 17, spatial stride 9); hybrid loss = 0.23 weighted MAE + 0.03 (1 - SSIM) + 0.74 SAM.

    python train_s2.py --quick                          # sample_data/, ~1 min on a 2-core CPU
    python train_s2.py --quick --loss mae               # Eq. 5 ablation: the weighted MAE alone
    python train_s2.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s2
    python train_s2.py --cubes ../shared/realdata/s2_l2a_romania/*.nc --bands B02 B03 B04 B08 B8A B11
        # one real area (its 10 m and 20 m files, six of the ten bands): fewer than 3 cubes are
        # cut into tiles and split by tile

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import functools

import data
import losses
import train
from deepfeat import AutoencoderConfig


def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    train.add_common_args(parser, out="runs/s2")
    parser.add_argument("--bands", nargs="+", default=list(data.S2_BANDS),
                        help="S2 bands to train on (default the ten 10-20 m bands B02..B12)")
    data.add_mask_arg(parser)
    parser.add_argument("--latent-dim", type=data.positive_int, default=9, help="latent size (default 9, Sec. III-B)")
    parser.add_argument("--loss", choices=("hybrid", "mae"), default="hybrid",
                        help="hybrid: Eq. 5 (default); mae: the context-weighted MAE alone (lambdas 1, 0, 0), "
                             "the baseline of the paper's 42 %% claim")
    parser.add_argument("--lambdas", type=float, nargs=3, default=None, metavar=("MAE", "SSIM", "SAM"),
                        help=f"Eq. 5 weights of the hybrid loss (default {' '.join(map(str, losses.S2_LAMBDAS))})")
    args = parser.parse_args(argv)
    if args.loss == "mae" and args.lambdas is not None:
        parser.error("--lambdas sets the hybrid loss; --loss mae is lambdas 1 0 0")
    lambdas = (1.0, 0.0, 0.0) if args.loss == "mae" else tuple(args.lambdas or losses.S2_LAMBDAS)
    train.pretrain(args, AutoencoderConfig("s2", tuple(args.bands), args.latent_dim), data.S2_SAMPLING,
                   functools.partial(losses.s2_loss, lambdas=lambdas), {"loss": args.loss, "lambdas": lambdas})


if __name__ == "__main__":
    data.run_cli(main)
