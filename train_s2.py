"""train_s2.py: pretrain the Sentinel-2 context-aware autoencoder (Sec. III-B, loss Eq. 5).

Ten 10-20 m bands -> 9-d latent. Patches of 15 x 15 px x 11 frames drawn from 20-frame sequences
(temporal stride 17, spatial stride 9); hybrid loss = 0.23 weighted MAE + 0.03 (1 - SSIM) + 0.74 SAM,
or with --quick the weighted MAE alone (Eq. 5 stalls at that budget; docs/learning.md).
What makes it S2 is its entry in modalities.py; recipe.pretrain is the whole autoencoder recipe
(data, model, loss, fit), the same for every modality. A student follows one training step through
modalities.py (the entry), recipe.py (`pretrain`), data.py (the sample) and train.py (`fit`).

    python train_s2.py --quick                          # sample_data/, ~10 min on a 2-core CPU
    python train_s2.py --quick --loss hybrid            # Eq. 5 at the quick budget: it stalls (docs/learning.md)
    python train_s2.py --cubes /data/cubes --epochs 100 --device cuda --out runs/s2
    python train_s2.py --cubes ../shared/realdata/s2_l2a_romania/*.nc --bands B02 B03 B04 B08 B8A B11
        # one real area (its 10 m and 20 m files, six of the ten bands): fewer than 3 cubes are
        # cut into tiles and split by tile

Writes OUT/checkpoint.pt, OUT/log.csv, OUT/loss_curves.png (Fig. 5), OUT/test_metrics.csv.
"""
import data
import recipe


def main(argv=None):
    return recipe.pretraining_command("s2", argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    data.run_cli(main)
