"""CycleGAN for photo <-> semantic-segmentation translation on ADE20K."""

__version__ = "0.1.0"
