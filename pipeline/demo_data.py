"""demo_data stage: write the seeded phantom DICOM archive (see imaging/demo.py) to paths.demo."""
from __future__ import annotations

import time

from common.io import atomic_dir
from common.seeding import stage_rng
from imaging.demo import write_demo_archive
from pipeline.params import parse_stage_args
from pipeline.tracking import numeric_metrics, stage_run


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params, cfg = args.params, args.params["demo"]
    out = args.path(params["paths"]["demo"])
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        counts = write_demo_archive(
            tmp, stage_rng(params["base"]["seed"], "demo_data"), patients=int(cfg["patients"]),
            images_per_patient=tuple(cfg["images_per_patient"]), sizes=tuple(cfg["sizes"]),
            pneumonia_fraction=float(cfg["pneumonia_fraction"]), broken=bool(cfg["broken_files"]))
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    with stage_run("demo_data", params, args.root, {"base": params["base"], "demo": cfg}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics(counts))
    print(f"demo_data: {counts['images']} images of {counts['patients']} patients"
          f" (+{counts.get('broken', 0)} broken files) in {out} [{counts['seconds']} s]")
    return counts


if __name__ == "__main__":
    main()
