"""The whole pipeline in a few CPU minutes: synthetic ADE20K -> shards -> training -> translations.

    cyclegan-demo                       # writes everything under ./demo_out
    cyclegan-demo --out /tmp/demo --epochs 2 --images 64
    cyclegan-demo --layout folders      # the seed project's photo and colour-map folders instead
    cyclegan-demo --layout unpaired     # photos of some scenes, colour maps of others: nothing pairs

It makes a small synthetic dataset in the real ADE20K on-disk layout (sky, buildings,
trees, roads, ... each class with its own colour and texture), or with ``--layout folders`` as
the seed project kept it (``images/`` and ``segmented/``: photos and colour maps in the ADE20K
display palette, paired by file name, plus ``val_images/`` and ``val_segmented/``), or with ``--layout
unpaired`` as two domains from different sources (the photos of 5/8 of the scenes, the colour maps of
the other 3/8; validation stays paired, as scoring needs), shards it with
cyclegan-shard, trains a small CycleGAN with ``configs/demo.yaml`` through the same
``cyclegan-train`` entry point as real runs, then translates the validation photos to
segmentation maps and the validation label maps to photos with the last epoch's
generators. Every step is one of the project's own commands; the demo only chains them. Training
runs as a process of its own (``python -m cyclegan.train``), as a user would start it: nothing
imports the trainer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from cyclegan.arguments import positive_int
from cyclegan.config import shipped_config
from cyclegan.data.shard import main as shard_main
from cyclegan.data.synthetic import FOLDER_NAMES, make_synthetic_ade20k, unpaired_domains
from cyclegan.generate import main as generate_main

PROG = "cyclegan-demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Any other flag goes to cyclegan-train after configs/demo.yaml, e.g. --train.precision bf16 "
        "(cyclegan-train --help lists them).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default ./demo_out)")
    parser.add_argument("--images", type=positive_int, default=128, help="synthetic training images (default 128)")
    parser.add_argument("--epochs", type=positive_int, help="training epochs (default: configs/demo.yaml)")
    parser.add_argument(
        "--layout",
        choices=("scene-parsing", "folders", "unpaired"),
        default="scene-parsing",
        help="dataset on disk: the ADE20K SceneParsing release (default), the seed's two folders of photos "
        "and colour maps, or unpaired: photos of some scenes and colour maps of others (validation paired)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args, train_overrides = build_parser().parse_known_args(argv)
    out: Path = args.out
    start = time.perf_counter()

    print(f"[1/4] synthetic ADE20K, {args.layout} layout ({args.images} training + 8 validation images) -> "
          f"{out / 'ade20k'}", flush=True)  # fmt: skip
    layout = "folders" if args.layout == "unpaired" else args.layout
    dataset = make_synthetic_ade20k(
        out / "ade20k", layout=layout, n_train=args.images, n_val=8, size=(96, 128), size_jitter=0.15, seed=0
    )
    if layout == "folders":
        (photos, maps), (val_photos, val_maps) = ([dataset / name for name in FOLDER_NAMES[split]]
                                                  for split in ("training", "validation"))  # fmt: skip
        unpaired = []
        if args.layout == "unpaired":
            photos, maps = unpaired_domains(photos, maps, out / "unpaired", photo_share=5 / 8)
            unpaired = ["--unpaired"]
            print(f"      unpaired: {sum(1 for _ in photos.iterdir())} photos in {photos}, "
                  f"{sum(1 for _ in maps.iterdir())} maps of other scenes in {maps}", flush=True)  # fmt: skip
        inputs = ["--photos", str(photos), "--segmentations", str(maps), *unpaired,
                  "--val-photos", str(val_photos), "--val-segmentations", str(val_maps)]  # fmt: skip
    else:
        val_photos, val_maps = dataset / "images" / "validation", dataset / "annotations" / "validation"
        inputs = ["--root", str(dataset)]

    print(f"[2/4] cyclegan-shard -> {out / 'shards'}", flush=True)
    shards = out / "shards"
    code = shard_main([*inputs, "--out", str(shards), "--samples-per-shard", "32", "--workers", "2"])
    if code:
        return code

    config = shipped_config("demo")
    print(f"[3/4] cyclegan-train --config {config} -> {out / 'run'}", flush=True)
    run = out / "run"
    overrides = ["--data.shards", str(shards), "--train.out_dir", str(run)]
    if args.epochs:
        overrides += ["--optim.epochs", str(args.epochs), "--optim.decay_epoch", str(args.epochs // 2)]
    train = [sys.executable, "-m", "cyclegan.train", "--config", str(config), *overrides, *train_overrides]
    code = subprocess.call(train)
    if code:
        return code
    last = max(int(p.stem.rsplit("_", 1)[1]) for p in run.glob("real2seg_gen_*.pt"))

    print(f"[4/4] cyclegan-generate with epoch {last}'s generators -> {out / 'translated'}", flush=True)
    jobs = (
        ("real2seg", val_photos, out / "translated" / "photo2seg"),
        ("seg2real", val_maps, out / "translated" / "seg2photo"),
    )
    for role, source, target in jobs:
        generator = run / f"{role}_gen_{last}.pt"
        if args.layout == "folders":  # the seed's own flags; maps drawn in the colours of its segmented/
            flags = ["--image_file", str(source), "--dir_to_generator", str(generator), "--save_directory",
                     str(target), "--file_width", "128", "--file_height", "96"]  # fmt: skip
            flags += ["--palette", "ade150"] if role == "real2seg" else []  # reading them, auto finds ade150
        else:
            flags = ["--input", str(source), "--generator", str(generator), "--output-dir", str(target),
                     "--width", "128", "--height", "96"]  # fmt: skip
        code = generate_main([*flags, "--overwrite"])
        if code:
            return code

    print(
        f"\ndone in {time.perf_counter() - start:.0f} s. Look at:\n"
        f"  sample grids (photo | G(photo) | F(G(photo)) | seg | F(seg) | G(F(seg))): {run / 'samples'}\n"
        f"  generators: {run}/real2seg_gen_{last}.pt, {run}/seg2real_gen_{last}.pt\n"
        f"  translations: {out / 'translated' / 'photo2seg'}, {out / 'translated' / 'seg2photo'}\n"
        f"  training state for --resume: {run / 'checkpoints'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
