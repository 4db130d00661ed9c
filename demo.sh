#!/usr/bin/env bash
# The quick start on sample_data/, CPU (~5 min on 2 cores; outputs in runs/quick/):
#   1. a short visible training of each stage (S1, S2, fusion: 150 steps each), its loss
#      falling, and where it ends against the predictors that need no learning (learning.py --score);
#   2. the trained models shipped in models/ (the full --quick recipe) embed a sample cube and the
#      flux-tower cube (without the quality layer: GPP reads the embedding alone), draw the PCA-vs-RGB
#      figure (Sec. IV-B) and run the GPP comparison (Sec. IV-C).
# bash demo.sh --full retrains the shipped models with their recipe first (6000 + 6000 + 1500 steps,
# ~45 min) and uses those instead of models/.
set -euo pipefail
cd "$(dirname "$0")"
OUT=runs/quick
MODELS=models
SHORT=(--quick --max-steps 150 --cache $OUT/cache)
if [ "${1:-}" = "--full" ]; then
    SHORT=(--quick --cache $OUT/cache)
    MODELS=$OUT
fi
python train_s1.py "${SHORT[@]}" --out $OUT/s1
python train_s2.py "${SHORT[@]}" --out $OUT/s2
python train_fusion.py "${SHORT[@]}" --s1-checkpoint $OUT/s1/checkpoint.pt --s2-checkpoint $OUT/s2/checkpoint.pt \
    --out $OUT/fusion
python learning.py --score $OUT/s1 $OUT/s2 $OUT/fusion
python embed.py --s2 sample_data/synth_0_s2.nc --s1 sample_data/synth_0_s1.nc \
    --checkpoint $MODELS/fusion/checkpoint.pt --out $OUT/synth_0_embeddings.nc
python embed.py pca $OUT/synth_0_embeddings.nc --s2 sample_data/synth_0_s2.nc --n-dates 3 --out $OUT/pca.png
python embed.py --s2 sample_data/tower/tower_s2.nc --s1 sample_data/tower/tower_s1.nc --quality-every 0 \
    --checkpoint $MODELS/fusion/checkpoint.pt --out $OUT/tower_embeddings.nc
python gpp.py --quick
