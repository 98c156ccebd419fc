"""Every native pixel layout, in every native transfer syntax, through de-identification.

A matrix of small images (photometric interpretation × bits allocated × syntax ×
frames × even or odd size) is de-identified twice in one batch each: without pixel
clean, every pixel byte passes through; with a device rule over the top-left corner,
every image pydicom can decode has that corner black (the darkest value: the highest
for MONOCHROME1) and the rest unchanged, and every image it cannot decode fails as
``pixel_clean_failed``, with nothing written for it. Such a matrix found valid images
refused as truncated (YBR_FULL_422), deflated images left uncleaned, and bit-packed
frames that text detection could not read.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify

KEY = ProjectKey.from_bytes(bytes(range(32)))
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
#: (PhotometricInterpretation, SamplesPerPixel, PlanarConfiguration, BitsAllocated choices)
LAYOUTS = (
    ("MONOCHROME2", 1, None, (1, 8, 16, 32)),
    ("MONOCHROME1", 1, None, (1, 8, 16)),
    ("PALETTE COLOR", 1, None, (8, 16)),
    ("RGB", 3, 0, (8, 16)),
    ("RGB", 3, 1, (8,)),
    ("YBR_FULL", 3, 0, (8, 16)),
    ("YBR_FULL_422", 3, 0, (8,)),
)
RULE = """
[profile]
base = "default"

[[pixel]]
name = "corner"
match = { Manufacturer = "ACME" }
regions = [[0, 0, 3, 2]]
"""


def _image(photometric: str, samples: int, planar: int | None, bits: int, syntax: str, frames: int, odd: bool) -> Dataset:
    rows, cols = (5, 7) if odd and photometric != "YBR_FULL_422" else (6, 8)  # 4:2:2 pairs columns
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Roe^Lena", "PX-1", "OT"
    ds.Manufacturer = "ACME"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, samples, photometric
    if planar is not None:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if photometric == "PALETTE COLOR":  # entry 0 is the darkest
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", (np.arange(256, dtype="<u2") * 257).tobytes())
    nbytes = (rows * cols * samples * frames * bits + 7) // 8
    if photometric == "YBR_FULL_422":
        nbytes = nbytes // 3 * 2
    value = (np.arange(nbytes) % 251 + 3).astype(np.uint8).tobytes()  # no corner is one value
    ds.PixelData = value + b"\0" * (nbytes % 2)
    ds["PixelData"].VR = "OB" if bits <= 8 else "OW"
    return ds


def _name(case: tuple[Any, ...]) -> str:
    photometric, _samples, planar, bits, syntax, frames, odd = case
    return f"{photometric.replace(' ', '_')}-{planar}-{bits}-{pydicom.uid.UID(syntax).keyword}-{frames}-{'odd' if odd else 'even'}"


CASES = [
    (photometric, samples, planar, bits, syntax, frames, odd)
    for (photometric, samples, planar, choices) in LAYOUTS
    for bits, syntax, frames, odd in itertools.product(choices, SYNTAXES, (1, 3), (False, True))
]


def _decodes(ds: Dataset) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.pixel_array  # noqa: B018
    except Exception:  # noqa: BLE001 - pydicom cannot (e.g. YBR_FULL of 16 bits)
        return False
    return True


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Dataset]]:
    """The inputs, written and read back; each output is found by its InstanceNumber (kept)."""
    root = tmp_path_factory.mktemp("layouts")
    (root / "in").mkdir()
    inputs: list[Dataset] = []
    for number, case in enumerate(CASES):
        ds = _image(*case)
        ds.InstanceNumber = number
        path = root / "in" / f"{_name(case)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        inputs.append(pydicom.dcmread(path))
    (root / "profile.toml").write_text(RULE)
    return root, inputs


def _outputs(result: Any) -> list[Dataset]:
    return [pydicom.dcmread(uri.removeprefix("file://")) for uri in result.outputs]


def _first_frame(ds: Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = ds.pixel_array
    return pixels if int(ds.get("NumberOfFrames", 1)) == 1 else pixels[0]


def test_without_pixel_clean_every_layout_passes_through_byte_for_byte(matrix: tuple[Path, list[Dataset]]) -> None:
    root, inputs = matrix
    result = deidentify(root / "in", root / "off", key=KEY, vault=root / "v-off", batch_id="b", pixel_clean="off", progress=False)
    assert result.ok and result.written == len(CASES), result.failed
    for out in _outputs(result):
        original = inputs[int(out.InstanceNumber)]
        assert out.PatientName == "" and out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert out.PixelData == original.PixelData, _name(CASES[int(out.InstanceNumber)])


def test_a_device_rule_blacks_out_its_corner_in_every_layout_or_fails_closed(matrix: tuple[Path, list[Dataset]]) -> None:
    root, inputs = matrix
    result = deidentify(
        root / "in", root / "rule", key=KEY, vault=root / "v-rule", batch_id="b",
        profile=str(root / "profile.toml"), pixel_clean="rules", progress=False,
    )  # fmt: skip
    undecodable = [ds for ds in inputs if not _decodes(ds)]
    assert all(ds.PhotometricInterpretation == "YBR_FULL" and ds.BitsAllocated == 16 for ds in undecodable)
    assert [f["kind"] for f in result.failed] == ["pixel_clean_failed"] * len(undecodable)
    assert result.findings.height == 0 and len(result.outputs) == result.written == len(CASES) - len(undecodable)
    for out in _outputs(result):
        name = _name(CASES[int(out.InstanceNumber)])
        assert out.BurnedInAnnotation == "NO", name
        cleaned, original = _first_frame(out), _first_frame(inputs[int(out.InstanceNumber)])
        # the rectangle and its margin (2 pixels); the darkest value is the highest in MONOCHROME1
        darkest = (1 << int(out.BitsStored)) - 1 if out.PhotometricInterpretation == "MONOCHROME1" else 0
        assert (cleaned[:4, :5] == darkest).all() and not (original[:4, :5] == darkest).all(), name
        assert np.array_equal(cleaned[4:], original[4:]), name  # decoded: YBR is written as RGB
