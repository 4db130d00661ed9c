"""train_s2.py: pretrain the Sentinel-2 context-aware autoencoder (Sec. III-B, loss Eq. 5).

Ten 10-20 m bands -> 9-d latent. Patches of 15 x 15 px x 11 frames drawn from 20-frame sequences
(temporal stride 17, spatial stride 9); hybrid loss = 0.23 weighted MAE + 0.03 (1 - SSIM) + 0.74 SAM.

    python train_s2.py --quick                          # sample_data/, ~1 min on a 2-core CPU
    python train_s2.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s2
    python train_s2.py --cubes romania_s2.nc --bands B02 B03 B04 B08 B8A B11   # a real cube lacking bands

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import argparse

import data
import losses
import train
from deepfeat import AutoencoderConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    train.add_common_args(parser, out="runs/s2")
    parser.add_argument("--bands", nargs="+", default=list(data.S2_BANDS),
                        help="S2 bands to train on (default the ten 10-20 m bands B02..B12)")
    parser.add_argument("--latent-dim", type=int, default=9, help="latent size (default 9, Sec. III-B)")
    args = parser.parse_args(argv)
    train.pretrain(args, AutoencoderConfig("s2", tuple(args.bands), args.latent_dim), data.S2_SAMPLING, losses.s2_loss)


if __name__ == "__main__":
    main()
