#!/usr/bin/env bash
# The quick start: every stage of the paper on sample_data/, CPU, quick mode (~25 min on 2 cores).
# Each line is a command from README "Reproducing the paper"; outputs land in runs/quick/.
set -euo pipefail
cd "$(dirname "$0")"
OUT=runs/quick
python train_s1.py --quick --out $OUT/s1
python train_s2.py --quick --out $OUT/s2
python train_fusion.py --quick --s1-checkpoint $OUT/s1/checkpoint.pt --s2-checkpoint $OUT/s2/checkpoint.pt \
    --out $OUT/fusion
python embed.py --s2 sample_data/synth_0_s2.nc --s1 sample_data/synth_0_s1.nc \
    --checkpoint $OUT/fusion/checkpoint.pt --out $OUT/synth_0_embeddings.nc
python embed.py pca $OUT/synth_0_embeddings.nc --s2 sample_data/synth_0_s2.nc --n-dates 3 --out $OUT/pca.png
python embed.py --s2 sample_data/tower/tower_s2.nc --s1 sample_data/tower/tower_s1.nc \
    --checkpoint $OUT/fusion/checkpoint.pt --out $OUT/tower_embeddings.nc
python gpp.py --quick
