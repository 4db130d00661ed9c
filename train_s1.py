"""train_s1.py: pretrain the Sentinel-1 context-aware autoencoder (Sec. III-B).

VV and VH (normalised gamma0, 0-1) -> 2-d latent. Patches of 15 x 15 px x 11 frames drawn from
40-frame sequences (temporal stride 40, spatial stride 15); loss: context-weighted MAE (Eq. 1).
The recipe is recipe.pretrain, with S1's entry in modalities.py (bands, reader, sampling, loss; with
only two bands a 128-wide token, 8 channels x 4 x 4, instead of S2's 256: S1's transformer then costs
a quarter, and embedding speed is set by the transformers, bench.py).

    python train_s1.py --quick                          # sample_data/, ~8 min on a 2-core CPU
    python train_s1.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s1

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import data
import recipe


def main(argv=None):
    return recipe.pretraining_command("s1", argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    data.run_cli(main)
