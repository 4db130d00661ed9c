"""train_s1.py: pretrain the Sentinel-1 context-aware autoencoder (Sec. III-B).

VV and VH (normalised gamma0, 0-1) -> 2-d latent. Patches of 15 x 15 px x 11 frames drawn from
40-frame sequences (temporal stride 40, spatial stride 15); loss: context-weighted MAE (Eq. 1).
The recipe is train_s2.py's `pretrain`, with S1's config, sampling and loss.
With only two bands we use a 128-wide token (8 channels x 4 x 4) instead of S2's 256: S1's
transformer then costs a quarter, and embedding speed is set by the transformers (bench.py).

    python train_s1.py --quick                          # sample_data/, ~8 min on a 2-core CPU
    python train_s1.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s1

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import data
import losses
import train
from deepfeat import S1_TOKEN_CHANNELS, AutoencoderConfig
from train_s2 import pretrain


def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    train.add_common_args(parser, out="runs/s1")
    parser.add_argument("--latent-dim", type=data.positive_int, default=2, help="latent size (default 2, Sec. III-B)")
    args = parser.parse_args(argv)
    model_cfg = AutoencoderConfig("s1", data.S1_BANDS, args.latent_dim, token_channels=S1_TOKEN_CHANNELS)
    pretrain(args, model_cfg, data.S1_SAMPLING, losses.s1_loss)


if __name__ == "__main__":
    data.run_cli(main)
