"""Benchmarks that print numbers: ``cyclegan-bench loader``, ``train`` (throughput), ``modes`` and ``maps`` (quality).

    # pairs/s of DALI, the torchvision fallback and a seed-style PIL loader, on shards made here
    cyclegan-bench loader
    # on your own shards, the GPU (DALI mixed decode, torchvision nvJPEG), batch 32
    cyclegan-bench loader --shards data/shards --device cuda --batch 32 --workers 8 --json loader.json
    # the speed ladder: one row per change from an official-style step to this project's default
    cyclegan-bench train --ladder --json ladder.json
    # one configuration: pairs/s, FLOPs, MFU, data wait
    cyclegan-bench train --batch 16 --precision bf16 --compile --json train.json
    # translation quality of model.seg_mode rgb vs classes (and paired), same seed and steps (CPU minutes)
    cyclegan-bench modes --json modes.json
    # colour maps (PNG, JPEG qualities) decoded back to class ids, against nearest-colour decoding
    cyclegan-bench maps --json maps.json

Speed is never asserted by the tests: these commands are where it is measured.
"""
