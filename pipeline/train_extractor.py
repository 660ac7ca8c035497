"""extractor stage: the domain feature extractor for FID and the memorisation audit, trained on the real
training split only -> paths.extractor/extractor.pt and summary.json (validation accuracy of its two tasks).

A stage of its own so every experiment on the same prepared data shares one extractor and their FIDs stay
comparable; its params (extractor.*) are the only ones it depends on besides the data and the seed.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from common.io import save_torch, write_json
from common.seeding import derive_seed
from evaluation.features import ExtractorConfig, extract, extractor_state, rotate_quarters, train_extractor
from pipeline import outputs
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.runtime import resolve_device, resolve_precision
from pipeline.tracking import stage_run


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params = args.params
    extractor_params = params["extractor"]
    out = args.path(params["paths"]["extractor"])
    prepared = args.path(params["paths"]["prepared"])
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    device = resolve_device(extractor_params["device"])
    cfg = ExtractorConfig(resolution=train.images.shape[-1], num_classes=len(train.classes),
                          width=int(extractor_params["width"]), dim=int(extractor_params["dim"]))
    seed = int(derive_seed(params["base"]["seed"], "extractor").generate_state(1)[0])
    t0 = time.perf_counter()
    net = train_extractor(train.images, train.labels, cfg, steps=int(extractor_params["steps"]),
                          batch=int(extractor_params["batch"]), lr=float(extractor_params["lr"]), seed=seed,
                          device=device, precision=resolve_precision(device))
    seconds = time.perf_counter() - t0
    # how well it learned its tasks, on the validation split (reported, not used to choose anything)
    with torch.no_grad():
        x = torch.as_tensor(val.images, dtype=torch.float32, device=device)
        cls, _ = net(x)
        label_acc = float((cls.argmax(1).cpu().numpy() == val.labels).mean())
        rot = torch.arange(len(x), device=device) % 4
        _, rlog = net(rotate_quarters(x, rot))
        rot_acc = float((rlog.argmax(1) == rot).float().mean())
    feats = extract(net, val.images)
    summary = {"config": cfg.to_dict(), "train_images": len(train.images), "val_images": len(val.images),
               "steps": int(extractor_params["steps"]), "val_label_accuracy": round(label_acc, 4),
               "val_rotation_accuracy": round(rot_acc, 4),
               "val_feature_effective_rank": int(np.linalg.matrix_rank(np.cov(feats, rowvar=False), tol=1e-6))
               if len(feats) > 2 else None, "data": train.data_hash}
    save_torch(out / outputs.EXTRACTOR, extractor_state(net.cpu(), classes=train.classes, data=train.data_hash))
    write_json(out / outputs.SUMMARY, summary)
    with stage_run("extractor", params, args.root, {"base": params["base"], "extractor": extractor_params}) as ml:
        if ml:
            ml.log_metrics({"val_label_accuracy": label_acc, "val_rotation_accuracy": rot_acc, "seconds": seconds})
            ml.log_artifact(str(out / outputs.SUMMARY))
    print(f"extractor: {cfg.dim}-d features, val label accuracy {label_acc:.3f}, rotation accuracy {rot_acc:.3f} "
          f"-> {out} [{seconds:.0f} s]")
    return summary


if __name__ == "__main__":
    main()
