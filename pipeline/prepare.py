"""prepare stage: a source (a tree of images with labels CSVs, class folders with or without split folders,
or a MedMNIST npz) -> paths.prepared/ images.npy (N,1,S,S float16 in [-1,1]), index.csv, quarantine.csv,
summary.json. `python -m pipeline.inspect` shows what this stage will do, in seconds."""
from __future__ import annotations

import csv
import time

import numpy as np
from tqdm import tqdm

from common.io import atomic_dir, write_json
from common.seeding import stage_rng
from imaging.ingest import INDEX_COLUMNS, assemble, ingest_many, ingest_npz
from imaging.pixels import PixelConfig
from imaging.sources import SourceConfig, SourceError, scan
from pipeline import outputs
from pipeline.params import parse_stage_args
from pipeline.tracking import numeric_metrics, stage_run


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params = args.params
    data, prep = params["data"], params["prepare"]
    source = args.path(data["source"])
    out = args.path(params["paths"]["prepared"])
    try:
        cfg = PixelConfig(size=int(prep["size"]), geometry=prep["geometry"], voi=prep["voi"],
                          percentiles=tuple(prep["percentiles"]))
        t0 = time.perf_counter()
        found = scan(source, SourceConfig.from_params(data))
        if found.kind == "npz":
            records = tqdm(ingest_npz(source, cfg), desc="prepare npz", unit="img", mininterval=1)
        else:
            records = tqdm(ingest_many(found.items, cfg, int(prep["workers"])), total=len(found.items),
                           desc=f"prepare {found.kind}", unit="img", mininterval=1)
        ds = assemble(found, records, classes=data["classes"] or [], patient_regex=data["patient_regex"],
                      patient_id_from=data.get("patient_id_from"),
                      fractions=prep["split"], split_rng=stage_rng(params["base"]["seed"], "prepare", "split"),
                      size=cfg.size, split_from=data["split_from"], min_val_images=int(data["min_val_images"]),
                      train_fraction=float(data["train_fraction"]),
                      fraction_rng=stage_rng(params["base"]["seed"], "prepare", "train_fraction"))
    except (SourceError, ValueError) as e:
        raise SystemExit(f"prepare: {e}") from e
    seconds = time.perf_counter() - t0
    # The source as written in params (relative to the project when it is): no absolute path, no timing in
    # the outputs, so the same data gives byte-identical outputs wherever the project sits.
    summary = {"source": str(data["source"]), **ds.summary}

    with atomic_dir(out) as tmp:
        mm = np.lib.format.open_memmap(tmp / outputs.IMAGES, mode="w+", dtype=np.float16, shape=ds.images.shape)
        mm[:] = ds.images
        mm.flush()
        del mm
        with open(tmp / outputs.INDEX, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
            writer.writeheader()
            writer.writerows(ds.index)
        with open(tmp / outputs.QUARANTINE, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason"])
            writer.writerows(sorted(ds.quarantine))
        write_json(tmp / outputs.SUMMARY, summary)

    with stage_run("prepare", params, args.root, {"base": params["base"], "data": data, "prepare": prep}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({**{k: summary[k] for k in
                                               ("found", "prepared", "quarantined", "patients", "duplicate_groups",
                                                "class_counts", "splits", "quarantine_reasons", "low_contrast_share")},
                                            "seconds": seconds, "images_per_second": summary["found"] / seconds}))
            ml.log_artifact(str(out / outputs.SUMMARY))
            ml.log_artifact(str(out / outputs.QUARANTINE))
    print(f"prepare: {summary['prepared']} images, {summary['quarantined']} quarantined, "
          f"{summary['patients']} patients -> {out} [{seconds:.1f} s, {summary['found'] / seconds:.0f} img/s]")
    print(f"prepare: split from {summary['split_from']}")
    for warning in summary.get("warnings", []):
        print(f"prepare: warning: {warning}")
    return summary


if __name__ == "__main__":
    main()
