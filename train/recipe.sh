#!/usr/bin/env bash
# The shipped models' recipe, one run after another; rerun the same command to --resume an interrupted run.
#
#   bash train/recipe.sh                      # CPU (what models/ was trained with: 2 cores, ~5 h)
#   EXTRA="--mixed-precision bf16 --num-workers 8" bash train/recipe.sh     # a GPU
#   LIMIT=150 bash train/recipe.sh            # stop cleanly after ~150 min; run again later to continue
#
# DATA (default ../shared/data) holds the six image-folder sets; OUT (default runs) gets one folder per model.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs}
EXTRA=${EXTRA:-}
SOURCES=""
for set in faces140k faces140k-extra ciplab stylegan2-thumbs lfw-faceswap sd-people; do SOURCES="$SOURCES --data $DATA/$set"; done
# stylegan2-thumbs is 128 px, so --min-size 128 (150 would drop the whole set); --crop-faces scores the pixels
# the app scores; --balance-sources 0.5 stops sd-people (5.3k images) from deciding the model alone.
COMMON="$SOURCES --min-size 128 --crop-faces --balance-sources 0.5 $EXTRA"

run() {  # run NAME ARGS...: skip a finished run, resume an interrupted one (MODULE=train.cached etc. picks the entry point)
    local name=$1; shift
    [ -d "$OUT/$name" ] && { echo "$OUT/$name is done"; return 0; }
    local resume=""
    case "${MODULE:-train}" in
        train|train.cached) [ -d "$OUT/$name.partial/checkpoint" ] && resume="--resume" ;;
        *) rm -rf "$OUT/$name.partial" ;;  # train.probe and train.stack fit in minutes over cached work: start again
    esac
    python -m "${MODULE:-train}" $COMMON "$@" --output "$OUT/$name" $resume ${LIMIT:+--time-limit-minutes $LIMIT}
    [ -d "$OUT/$name" ]  # a time-limited stop leaves only the .partial folder: stop here, continue next time
}

# EfficientNet-Lite2 in two steps: 4 epochs at 160 px from ImageNet, then 1 more at 224 px from there
# (--init-from): the larger input costs 2x per epoch, so it gets only the last one.
run efficientnet-lite2-160 --model efficientnet-lite2 --pretrained --image-size 160 --epochs 4 --learning-rate 5e-4 \
    --warmup-epochs 0.3 --patience 3 --num-workers 1
run efficientnet-lite2 --model efficientnet-lite2 --init-from "$OUT/efficientnet-lite2-160" --image-size 224 --epochs 1 \
    --learning-rate 2e-4 --warmup-epochs 0.1 --patience 1 --num-workers 1
# DINOv2 ViT-S/14 as a feature probe (python -m train.probe): nothing in the ViT trains; blocks 0-9 run once per
# image into train.cached's activation cache, and a logistic regression over the CLS and mean patch tokens of blocks
# 9-11 learns one class per source and label (fakes summed), on the rows and face boxes of the Lite2 run so the
# test images are the same. It beat fine-tuning blocks 10-11 over the same cache (python -m train.cached, 0.834 /
# AUC 0.919): 0.878 / AUC 0.949. --balance-sources 1 weighs every source alike.
MODULE=train.probe run dinov2-vits14-probe --model dinov2-vits14 --pretrained --splits-from "$OUT/efficientnet-lite2" \
    --layers 9 10 11 --balance-sources 1 --batch-size 32 --num-workers 1 --robustness jpeg_q75 downscale_64 \
    --save-dtype float16
# The ensemble: the DINOv2 probe + Lite2, its combiner fitted on half of their validation split (python -m
# train.stack). The probe is listed first: the ensemble's input is then the probe's own, so its activations come
# from the cache the probe filled instead of running the ViT again.
# (The probe reads the images with its ViT rounded to float16, as it ships, so the stack reuses its cache.)
MODULE=train.stack run ensemble --model ensemble --members "$OUT/dinov2-vits14-probe" "$OUT/efficientnet-lite2" \
    --splits-from "$OUT/efficientnet-lite2" --batch-size 32 --num-workers 1 --robustness jpeg_q75 downscale_64 \
    --save-dtype float16
# A second probe on the same frozen ViT, read at middle blocks 3, 5 and 7 with the patch tokens' standard deviation
# too: where StyleGAN faces differ from FFHQ's (bench/probe_layers.py: on the faces140k group 0.886 / AUC 0.951
# against 0.818 / 0.900 at blocks 9-11). Blocks 0-3 are cached (~3 GB for the six sets). In an ensemble it shares the
# first probe's ViT (models.share_backbones): stored once, run once, so it costs its head.
MODULE=train.probe run dinov2-vits14-probe-middle --model dinov2-vits14 --pretrained --splits-from "$OUT/efficientnet-lite2" \
    --layers 3 5 7 --pooling cls mean std --balance-sources 1 --batch-size 32 --num-workers 1 --robustness jpeg_q75 \
    --save-dtype float16
# The larger pool (POOL=~/pool bash train/recipe.sh; build it with python -m train.sources, README "The larger
# pool"): the probe again over the six sets plus every pool image, the six sets' rows keeping Lite2's splits
# (--splits-from) so the test split still holds the same rows, and the pool's sources split here with at most 500
# validation and 500 test images of each source and class (--max-eval-per-source: the rest of UTKFace's 22k
# trains). The activation cache already holds the six sets' rows, so only the pool's images run through the ViT.
# Then the ensemble over this probe, the two middle-block probes and Lite2, on the probe's splits, the last three
# gated by the probe (--gate: they trained on the six sets or faces140k only, so the combiner weighs each by the
# probe's belief that a face comes from its sources).
if [ -n "${POOL:-}" ]; then
    MODULE=train.probe run dinov2-vits14-probe-pool --model dinov2-vits14 --pretrained --pool "$POOL" \
        --max-eval-per-source 500 --preprocess-workers "$(nproc)" --splits-from "$OUT/efficientnet-lite2" \
        --layers 9 10 11 --batch-size 32 --num-workers 1 --robustness jpeg_q75 --save-dtype float16
    # A faces140k specialist on the middle probe's blocks: the faces140k sources' rows of the pool probe's splits
    # (--splits-from keeps the rows of the --data sources), activations copied from the middle probe's cache. Plain
    # fake/real classes, rows unweighted (bench/probe_layers.py's setting).
    COMMON="--data $DATA/faces140k --data $DATA/faces140k-extra --data $POOL/faces140k-demo --min-size 128 --crop-faces $EXTRA" \
    MODULE=train.probe run dinov2-vits14-probe-faces140k --model dinov2-vits14 --pretrained \
        --splits-from "$OUT/dinov2-vits14-probe-pool" --layers 3 5 7 --pooling cls mean std --classes label \
        --balance-sources 0 --batch-size 32 --num-workers 1 --robustness jpeg_q75 --save-dtype float16
    # A Lite2 fine-tuned on the same faces140k rows (ImageNet start, up to 30 epochs at 224 px, patience 6: it
    # stopped after 23, best at 17, 64 min on 2 cores): the CNN sees what the ViT's frozen blocks miss there (0.908 /
    # AUC 0.969 on the 368 test faces, the DINOv2 specialist 0.853 / 0.940; 14 epochs gave 0.867 / 0.962, 6 epochs
    # 0.853 / 0.930).
    COMMON="--data $DATA/faces140k --data $DATA/faces140k-extra --data $POOL/faces140k-demo --min-size 128 --crop-faces $EXTRA" \
    run efficientnet-lite2-faces140k --model efficientnet-lite2 --pretrained --image-size 224 --epochs 30 \
        --learning-rate 5e-4 --warmup-epochs 0.3 --patience 6 --num-workers 1 --splits-from "$OUT/dinov2-vits14-probe-pool" \
        --robustness jpeg_q75
    # A ciplab specialist on the same ViT, blocks 3-11 (0.688 / AUC 0.721 on ciplab's 240 test faces, 3 min).
    COMMON="--data $DATA/ciplab --data $POOL/ciplab-copy --min-size 128 --crop-faces $EXTRA" \
    MODULE=train.probe run dinov2-vits14-probe-ciplab --model dinov2-vits14 --pretrained \
        --splits-from "$OUT/dinov2-vits14-probe-pool" --layers 3 5 7 9 11 --pooling cls mean std --classes label \
        --balance-sources 0 --inverse-l2 0.01 --batch-size 32 --num-workers 1 --robustness jpeg_q75 --save-dtype float16
    # The six, stacked and gated, the combiner cross-fitted over all of validation (--folds 10; README "A faces140k
    # Lite2 trained to convergence": it keeps the uncertain share under 20 % where the half split went over). The two
    # faces140k specialists are gated by a learned router over both source-class probes (README "Routers": the pool
    # probe alone mistakes a quarter of faces140k's faces for other FFHQ / StyleGAN sources).
    MODULE=train.stack run ensemble-pool --model ensemble --pool "$POOL" --members "$OUT/dinov2-vits14-probe-pool" \
        "$OUT/dinov2-vits14-probe-middle" "$OUT/dinov2-vits14-probe-faces140k" "$OUT/efficientnet-lite2" \
        "$OUT/efficientnet-lite2-faces140k" "$OUT/dinov2-vits14-probe-ciplab" --splits-from "$OUT/dinov2-vits14-probe-pool" \
        --preprocess-workers "$(nproc)" --batch-size 32 --num-workers 1 --robustness jpeg_q75 --save-dtype float16 \
        --gate --folds 10 --route-members "$OUT/dinov2-vits14-probe-faces140k" "$OUT/efficientnet-lite2-faces140k"
fi
# The comparison models, last: the app defaults to the ensemble above.
run tuned-cnn --model tuned-cnn --image-size 128 --epochs 6 --patience 3 --num-workers 2
run xception --model xception --width 0.5 --image-size 128 --epochs 6 --patience 3 --num-workers 2
