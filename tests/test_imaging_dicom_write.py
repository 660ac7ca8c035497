"""DICOM writing (imaging/dicom_write.py): the files' bytes depend on the data set alone, not on the version of
pydicom that writes them."""
import numpy as np
import pydicom
import pytest

from imaging.dicom_write import (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, SYNTAXES, encode,
                                 grey_dataset, synthetic_dataset)


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_written_files_name_the_project_not_the_pydicom_version(tmp_path, syntax, monkeypatch):
    stored = (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32)
    paths = []
    for version in (("3", "0", "2"), ("9", "9", "9")):   # pydicom fills (0002,0013) from its version if unset
        monkeypatch.setattr(pydicom.dataset, "__version_info__", version)
        paths.append(tmp_path / f"{'.'.join(version)}.dcm")
        encode(grey_dataset(stored.copy(), bits_stored=8, sop_uid="1.2.3.4"), syntax).save_as(
            paths[-1], enforce_file_format=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    meta = pydicom.dcmread(paths[0]).file_meta
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME == "MEDAUG"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID


def test_synthetic_copies_name_the_project(tmp_path):
    ds = synthetic_dataset(np.zeros((16, 16), np.uint8), sop_uid="1.2.3.4", study_uid="1.2.3", series_uid="1.2.3.5",
                           instance=1, comment="seed 1")
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "s.dcm").file_meta.ImplementationVersionName == "MEDAUG"
