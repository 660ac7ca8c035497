"""The file names inside the stages' outputs, in one place: the stage that writes a file and every module that
reads it (another stage, the report, vtt_score) spell it with these constants. The folders themselves are
paths.* in params.yaml; dvc.yaml may name a file inside one (a dep on generator.pt, the DVC plots).
"""
from __future__ import annotations

# Shared by several stages' folders (paths.prepared, paths.synthetic, paths.extractor, paths.gan_reports,
# paths.vtt): each stage's own summary, and the image array with its index of the prepared and synthetic sets
SUMMARY = "summary.json"
IMAGES = "images.npy"    # (N,1,S,S) float16 in [-1, 1]
INDEX = "index.csv"      # one row per image, in IMAGES order

# prepare -> paths.prepared/ (besides IMAGES, INDEX, SUMMARY)
QUARANTINE = "quarantine.csv"

# extractor -> paths.extractor/
EXTRACTOR = "extractor.pt"

# train_gan -> paths.gan_model/ and paths.gan_reports/ (CHECKPOINT: in paths.gan_work, for resuming)
GENERATOR = "generator.pt"
CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.csv"
FID_LOG = "fid.csv"
GRIDS = "grids"                      # a folder: one sample grid every gan.grid_every epochs, and the final one
FINAL_GRID = f"{GRIDS}/final.png"
CLASS_SAMPLES_PREFIX = "samples_"    # samples_<class>.png: the final grid's rows of one class


def class_samples(name: str) -> str:
    return f"{CLASS_SAMPLES_PREFIX}{name}.png"


CLASS_SAMPLES_GLOB = class_samples("*")

# synthesize -> paths.synthetic/ (besides IMAGES, INDEX, SUMMARY)
CONTACT_SHEET = "contact_sheet.png"

# fidelity -> paths.fidelity_reports/
NEAREST_PAIRS_PREFIX = "nearest_pairs_"  # nearest_pairs_<space>.png: the memorisation audit's closest pairs


def nearest_pairs(space: str) -> str:
    return f"{NEAREST_PAIRS_PREFIX}{space}.png"


NEAREST_PAIRS_GLOB = nearest_pairs("*")
# in paths.fidelity_metrics, memorisation.<space>: the synthetic rows that space's pairs figure shows (the report
# shows them, so vtt_export leaves them out)
PAIRS_SHOWN = "pairs_synthetic_rows"


# downstream -> paths.downstream_metrics/<arm>.json and paths.downstream_reports/<arm>/
def arm_metrics(arm: str) -> str:
    return f"{arm}.json"


ROC = "roc.csv"
PREDICTIONS = "predictions.csv"

# vtt_export -> paths.vtt/ (besides SUMMARY)
BLINDED = "blinded"          # a folder: what the readers get
MANIFEST = "manifest.json"   # inside BLINDED
READER_PAGE = "reader.html"  # inside BLINDED
INSTRUCTIONS_FILE = "INSTRUCTIONS.txt"  # inside BLINDED
VTT_KEY = "key.csv"          # outside BLINDED: never sent
