"""prepare stage: a source (DICOM tree + labels CSV, class folders, or MedMNIST npz) -> paths.prepared/
images.npy (N,1,S,S float16 in [-1,1]), index.csv, quarantine.csv, summary.json."""
from __future__ import annotations

import csv
import time

import numpy as np
from tqdm import tqdm

from common.io import atomic_dir, write_json
from common.seeding import stage_rng
from imaging.ingest import INDEX_COLUMNS, assemble, ingest_many, ingest_npz, scan
from imaging.pixels import PixelConfig
from imaging.sources import SourceError
from pipeline.params import parse_stage_args
from pipeline.tracking import numeric_metrics, stage_run


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    data, prep = p["data"], p["prepare"]
    source = args.path(data["source"])
    out = args.path(p["paths"]["prepared"])
    try:
        cfg = PixelConfig(size=int(prep["size"]), geometry=prep["geometry"], voi=prep["voi"],
                          percentiles=tuple(prep["percentiles"]))
        t0 = time.perf_counter()
        found = scan(source, data["kind"], data["labels"])
        if found.kind == "npz":
            records = tqdm(ingest_npz(source, cfg), desc="prepare npz", unit="img", mininterval=1)
        else:
            records = tqdm(ingest_many(found.items, cfg, int(prep["workers"])), total=len(found.items),
                           desc=f"prepare {found.kind}", unit="img", mininterval=1)
        ds = assemble(source, found, records, labels_file=data["labels"], classes=data["classes"] or [],
                      patient_regex=data["patient_regex"], fractions=prep["split"],
                      rng=stage_rng(p["base"]["seed"], "prepare", "split"), size=cfg.size)
    except (SourceError, ValueError) as e:
        raise SystemExit(f"prepare: {e}") from e
    seconds = time.perf_counter() - t0
    # an out depends on its inputs only: the source as params name it (not this clone's absolute path), and
    # no timings (those go to the log and MLflow)
    summary = {**ds.summary, "source": str(data["source"])}
    images_per_second = round(ds.summary["found"] / seconds, 1)
    if summary["patient_id_from"].get("file"):
        summary["warnings"] = [f"{summary['patient_id_from']['file']} images have no patient id (no PatientID, "
                               "no data.patient_regex match): each is treated as its own patient, so images of "
                               "one patient may straddle splits"]

    with atomic_dir(out) as tmp:
        mm = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float16, shape=ds.images.shape)
        mm[:] = ds.images
        mm.flush()
        del mm
        with open(tmp / "index.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
            w.writeheader()
            w.writerows(ds.index)
        with open(tmp / "quarantine.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows(sorted(ds.quarantine))
        write_json(tmp / "summary.json", summary)

    with stage_run("prepare", p, args.root, {"base": p["base"], "data": data, "prepare": prep}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({k: summary[k] for k in
                                            ("found", "prepared", "quarantined", "patients", "duplicate_groups",
                                             "class_counts", "splits", "quarantine_reasons")}))
            ml.log_metrics({"seconds": seconds, "images_per_second": images_per_second})
            ml.log_artifact(str(out / "summary.json"))
            ml.log_artifact(str(out / "quarantine.csv"))
    print(f"prepare: {summary['prepared']} images, {summary['quarantined']} quarantined, "
          f"{summary['patients']} patients -> {out} [{seconds:.1f} s, {images_per_second} img/s]")
    for w in summary.get("warnings", []):
        print(f"prepare: warning: {w}")
    return summary


if __name__ == "__main__":
    main()
