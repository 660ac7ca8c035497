"""The tests mirror the libraries: every module <package>/<module>.py of common/, imaging/, dcgan/ and
evaluation/ has its unit tests in tests/test_<package>_<module>.py, or a line in EXEMPT that says why not and
where the module is exercised instead (issue 19). Stage tests (pipeline/) are named after their stage."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("common", "imaging", "dcgan", "evaluation")

# module -> why it has no test module of its own, and where it is exercised
EXEMPT = {
    "common/io.py": "no test of its own; every stage writes its outs through it (test_prepare.py, test_dvc.py); "
                    "that an interrupted write leaves nothing behind is not tested",
    "common/precision.py": "no test of its own; native_bf16 through resolve_runtime on faked GPUs (test_runtime.py), "
                           "autocast through the bf16 runs of test_dcgan_train.py, test_evaluation_features.py and "
                           "test_evaluation_downstream.py",
    "common/seeding.py": "no test of its own; the seeded stages rerun byte-identical in test_dvc.py",
    "common/torchvision_guard.py": "no test of its own; evaluation/fidelity.py calls it on import, so "
                                   "test_evaluation_fidelity.py fails without it where torchvision mismatches torch",
    "imaging/demo.py": "through the demo_data stage (test_prepare.py: each broken file quarantined with its reason) "
                       "and the demo_archive fixture (test_imaging_decode.py)",
    "imaging/ingest.py": "through the prepare stage on every source kind (test_prepare.py, test_layouts.py); "
                         "ingest_file's quarantine reasons in test_imaging_decode.py",
    "imaging/phantoms.py": "no test of its own; it draws the images of test_prepare.py and test_layouts.py, "
                           "and no test checks the anatomy it draws",
    "imaging/sources.py": "through the prepare and inspect stages on every source layout (test_prepare.py, "
                          "test_layouts.py)",
}


def library_modules() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for package in LIBRARIES
                  for path in (ROOT / package).rglob("*.py") if path.name != "__init__.py")


def mirror(module: str) -> Path:
    """tests/test_<package>_<module>.py for <package>/<module>.py."""
    return ROOT / "tests" / f"test_{module.removesuffix('.py').replace('/', '_')}.py"


def test_every_library_module_has_its_test_module_or_says_why_not():
    modules = library_modules()
    assert len(modules) >= 20, f"found only {modules} under {LIBRARIES}"
    missing = [f"{m}: add {mirror(m).relative_to(ROOT)} or an EXEMPT line" for m in modules
               if m not in EXEMPT and not mirror(m).is_file()]
    assert not missing, "library modules without a test module:\n" + "\n".join(missing)
    stale = [m for m in EXEMPT if m not in modules or mirror(m).is_file()]
    assert not stale, f"EXEMPT lists modules that are gone or now have a test module; remove them: {stale}"
