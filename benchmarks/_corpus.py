"""Synthetic DICOM corpora for dicomframe's benchmarks (shared by every ``bench_*.py``).

:func:`make_ct_corpus` writes a CT cohort whose headers look like a real scanner's
export: about 130 top-level elements covering the patient, study, series, equipment,
frame-of-reference, CT image, image-plane, image-pixel, VOI-LUT and request modules,
three sequences (ReferencedImageSequence, ProcedureCodeSequence,
RequestAttributesSequence) and two private blocks (creator + LO/DS/UN elements), in
Explicit VR Little Endian with 16-bit pixel data. Every value is invented.

Speed: one template :class:`~pydicom.dataset.Dataset` is built per corpus and the pixel
bytes are generated once; for each file only the identifying attributes (UIDs,
numbers, positions, patient fields) change. A plain ``dcmwrite`` of a 140-element
header costs about 2 ms, so :class:`_TemplateWriter` keeps each top-level element's
encoded bytes (made by pydicom's own ``write_dataset``) and re-encodes only the
elements that changed, plus the File Meta Information, before writing the pieces.
The first file of every corpus is checked byte for byte against ``dcmwrite(ds,
enforce_file_format=True)`` so the shortcut cannot drift from what pydicom writes.

Caching: the corpus lives under ``<folder>/dicom/<study>/<series>/IM#####.dcm`` and a
marker ``<folder>/corpus.json`` records the parameters it was built with. The marker
sits outside ``dicom/`` so a scan of ``corpus_root(folder)`` sees DICOM files only. A
later call with the same parameters finds the marker and every expected file and
returns at once; anything else wipes ``dicom/`` and regenerates.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

__all__ = ["GENERATOR_VERSION", "CorpusSpec", "corpus_bytes", "corpus_root", "make_ct_corpus"]

#: bump when the generated content changes, so cached corpora are rebuilt
GENERATOR_VERSION = 1

_MARKER = "corpus.json"
_DATA = "dicom"
#: pydicom's registered UID root (for examples and test data)
_UID_ROOT = "1.2.826.0.1.3680043.8.498"

_GIVEN = ["ANNA", "BEN", "CARLA", "DAVID", "EMMA", "FELIX", "GRACE", "HUGO", "IRIS", "JONAS",
          "KARIN", "LEO", "MARTA", "NILS", "OLGA", "PAUL", "RUTH", "SVEN", "TARA", "VIKTOR"]
_FAMILY = ["ALDER", "BRANDT", "CORVIN", "DALMAU", "EKSTROM", "FARRELL", "GUNDERSEN", "HALVOR",
           "IBSEN", "JAROS", "KOVAC", "LINDQVIST", "MORROW", "NAKATA", "OKONJO", "PRADEL",
           "QUILL", "ROSSI", "SANTOS", "TREMBLAY"]
_BODY = [("CHEST", "CT CHEST W/O CONTRAST", "CTCHEST"), ("ABDOMEN", "CT ABD/PELVIS WITH CONTRAST", "CTABD"),
         ("HEAD", "CT HEAD W/O CONTRAST", "CTHEAD"), ("KNEE", "CT KNEE LEFT", "CTKNEE")]
_SERIES = ["AXIAL 5MM STD", "AXIAL 1.25MM LUNG", "CORONAL 3MM", "SAGITTAL 3MM", "AXIAL 0.625MM BONE",
           "DOSE REPORT RECON", "AXIAL 2.5MM SOFT", "MIP 10MM"]


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a corpus's bytes (stored in the marker)."""

    n_files: int
    rows: int
    cols: int
    seed: int
    studies: int
    series_per_study: int
    generator_version: int = GENERATOR_VERSION


def corpus_root(folder: str | Path) -> Path:
    """The folder holding only DICOM files (the one to scan)."""
    return Path(folder) / _DATA


def corpus_bytes(paths: list[Path]) -> int:
    """Total size of the files (for MB/s figures)."""
    return sum(p.stat().st_size for p in paths)


def _default_studies(n_files: int, series_per_study: int) -> int:
    # about 100 images per series, like a thin-slice CT export
    return max(1, round(n_files / (series_per_study * 100)))


def _layout(spec: CorpusSpec) -> Iterator[tuple[int, int, int, Path]]:
    """(study, series, instance, relative path) for every file, spread evenly."""
    groups = spec.studies * spec.series_per_study
    first_of_group = 0
    prev_group = -1
    for k in range(spec.n_files):
        g = k * groups // spec.n_files
        if g != prev_group:
            first_of_group, prev_group = k, g
        study, series = divmod(g, spec.series_per_study)
        instance = k - first_of_group + 1
        rel = Path(f"study_{study:04d}", f"series_{series + 1:02d}", f"IM{instance:05d}.dcm")
        yield study, series, instance, rel


def _uid(*parts: int) -> str:
    return ".".join([_UID_ROOT, *(str(p) for p in parts)])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _pixel_bytes(rows: int, cols: int, seed: int) -> bytes:
    """A smooth gradient plus noise, 12 bits stored in 16 (like CT)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    base = (x * 1600 // max(cols, 1) + y * 1600 // max(rows, 1)).astype(np.int32)
    noise = rng.integers(0, 400, size=(rows, cols), dtype=np.int32)
    return np.clip(base + noise, 0, 4095).astype("<u2").tobytes()


def _template(spec: CorpusSpec) -> Dataset:
    """A CT image header with about 130 top-level elements (values replaced per file)."""
    ds = Dataset()
    # SOP common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = "20240312"
    ds.InstanceCreationTime = "101532.000"
    ds.InstanceCreatorUID = _uid(9, 1)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _uid(3, spec.seed, 0, 0, 0)
    ds.StudyDate = "20240312"
    ds.SeriesDate = "20240312"
    ds.AcquisitionDate = "20240312"
    ds.ContentDate = "20240312"
    ds.AcquisitionDateTime = "20240312101455.120000"
    ds.StudyTime = "101201.000"
    ds.SeriesTime = "101412.000"
    ds.AcquisitionTime = "101455.120"
    ds.ContentTime = "101532.000"
    ds.AccessionNumber = "A0000000"
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.InstitutionName = "NORTHBROOK GENERAL HOSPITAL"
    ds.InstitutionAddress = "12 HARBOUR ROAD, NORTHBROOK"
    ds.ReferringPhysicianName = "WELLS^MARGARET^^DR"
    ds.StationName = "NBCT01"
    ds.StudyDescription = "CT CHEST W/O CONTRAST"
    ds.ProcedureCodeSequence = Sequence([_code("CTCHEST", "L", "CT CHEST W/O CONTRAST")])
    ds.SeriesDescription = "AXIAL 5MM STD"
    ds.InstitutionalDepartmentName = "RADIOLOGY"
    ds.PhysiciansOfRecord = "WELLS^MARGARET"
    ds.PerformingPhysicianName = "OKAFOR^DANIEL"
    ds.NameOfPhysiciansReadingStudy = "HALVORSEN^INGRID"
    ds.OperatorsName = "TECH^JAMIE"
    ds.AdmittingDiagnosesDescription = "PERSISTENT COUGH"
    ds.ManufacturerModelName = "Revolution CT"
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = CTImageStorage
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = _uid(3, spec.seed, 0, 0, 0)
    ds.DerivationDescription = ""
    # patient
    ds.PatientName = "ALDER^ANNA"
    ds.PatientID = "P0000000"
    ds.IssuerOfPatientID = "NBGH"
    ds.PatientBirthDate = "19610417"
    ds.PatientBirthTime = ""
    ds.PatientSex = "F"
    ds.OtherPatientIDs = "NB-000000"
    ds.PatientAge = "062Y"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "71.5"
    ds.PatientAddress = "4 MILL LANE, NORTHBROOK"
    ds.EthnicGroup = ""
    ds.SmokingStatus = "NO"
    ds.AdditionalPatientHistory = "FOLLOW-UP OF PULMONARY NODULE"
    ds.PatientComments = ""
    ds.PatientIdentityRemoved = "NO"
    # CT acquisition
    ds.ContrastBolusAgent = ""
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = "5.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500.0"
    ds.DeviceSerialNumber = "CT7731945"
    ds.SoftwareVersions = "revo_ct_22.1"
    ds.ProtocolName = "5.1 CHEST ROUTINE"
    ds.ReconstructionDiameter = "360.0"
    ds.DistanceSourceToDetector = "1097.61"
    ds.DistanceSourceToPatient = "625.61"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = "162.0"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "220"
    ds.Exposure = "110"
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = "26400"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "FFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.TableSpeed = 79.375
    ds.TableFeedPerRotation = 39.688
    ds.SpiralPitchFactor = 0.992188
    ds.DataCollectionCenterPatient = [0.0, -162.0, -120.5]
    ds.ReconstructionTargetCenterPatient = [0.0, -162.0, -120.5]
    ds.ExposureModulationType = "ANGULAR"
    ds.CTDIvol = 7.42
    ds.DateOfLastCalibration = "20240301"
    ds.TimeOfLastCalibration = "071500"
    # relationship / frame of reference / image plane
    ds.StudyInstanceUID = _uid(1, spec.seed, 0)
    ds.SeriesInstanceUID = _uid(2, spec.seed, 0, 0)
    ds.StudyID = "S0000"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["-180.0", "-342.0", "0.0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = _uid(4, spec.seed, 0)
    ds.PositionReferenceIndicator = "SN"
    ds.SliceLocation = "0.0"
    ds.ImageComments = ""
    # image pixel / CT image / VOI LUT
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    spacing = f"{360.0 / max(spec.cols, 1):.6f}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SmallestImagePixelValue = 0
    ds.LargestImagePixelValue = 4095
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1500"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["WINDOW1", "WINDOW2"]
    ds.LossyImageCompression = "00"
    # request / performed procedure step
    ds.RequestingPhysician = "WELLS^MARGARET"
    ds.RequestingService = "PULMONOLOGY"
    ds.RequestedProcedureDescription = "CT CHEST W/O CONTRAST"
    ds.RequestedContrastAgent = ""
    ds.StudyComments = ""
    ds.PerformedStationAETitle = "NBCT01"
    ds.PerformedProcedureStepStartDate = "20240312"
    ds.PerformedProcedureStepStartTime = "101155"
    ds.PerformedProcedureStepID = "PPS0000"
    ds.PerformedProcedureStepDescription = "CT CHEST W/O CONTRAST"
    request = Dataset()
    request.RequestedProcedureID = "RP0000"
    request.ScheduledProcedureStepID = "SPS0000"
    request.ScheduledProcedureStepDescription = "CT CHEST W/O CONTRAST"
    request.RequestedProcedureCodeSequence = Sequence([_code("CTCHEST", "L", "CT CHEST W/O CONTRAST")])
    ds.RequestAttributesSequence = Sequence([request])
    ds.IrradiationEventUID = _uid(5, spec.seed, 0, 0)
    ds.TimezoneOffsetFromUTC = "+0100"
    # private blocks (vendor-like, creators unknown to pydicom so UN stays UN):
    # identifiers in 0009, acquisition parameters in 0043
    block = ds.private_block(0x0009, "ACME_IDEN_01", create=True)
    block.add_new(0x01, "LO", "NBCT01_OC0")
    block.add_new(0x02, "LO", "CT_LIGHTSPEED")
    block.add_new(0x04, "LO", "Revolution CT")
    block.add_new(0x27, "DS", "1710238512.5")
    block.add_new(0xE3, "UN", b"NBCT01\x00\x00ACQ\x00")
    block = ds.private_block(0x0043, "ACME_PARM_01", create=True)
    block.add_new(0x01, "DS", "0.0")
    block.add_new(0x02, "DS", "1.0")
    block.add_new(0x10, "LO", "STANDARD")
    block.add_new(0x1E, "DS", "0.5")
    block.add_new(0x27, "UN", b"/1.0:1\x00\x00")
    block.add_new(0x64, "DS", "7.42")
    # pixel data last
    ds.PixelData = _pixel_bytes(spec.rows, spec.cols, spec.seed)
    ds["PixelData"].VR = "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid(9, 2)
    meta.ImplementationVersionName = "DCMFRAME_BENCH"
    ds.file_meta = meta
    return ds


class _TemplateWriter:
    """Write Part 10 files from a mutable template, re-encoding only changed elements.

    Set values with :meth:`set` (or change a sequence item and call :meth:`touch`) so
    the element's cached bytes are dropped; :meth:`write` then produces exactly what
    ``dcmwrite(path, ds, enforce_file_format=True)`` would (Explicit VR Little Endian).
    """

    _PREAMBLE = b"\x00" * 128 + b"DICM"

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._charset = ds.get("SpecificCharacterSet", "ISO_IR 6")
        self._cache: dict[int, bytes] = {}

    def set(self, keyword: str, value: object) -> None:
        setattr(self.ds, keyword, value)
        self.touch(keyword)

    def touch(self, keyword: str) -> None:
        self._cache.pop(int(self.ds.data_element(keyword).tag), None)  # type: ignore[union-attr]

    def _encoded(self, tag: int) -> bytes:
        data = self._cache.get(tag)
        if data is None:
            one = Dataset()
            one[tag] = self.ds[tag]
            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = True, False
            write_dataset(fp, one, parent_encoding=self._charset)
            data = self._cache[tag] = fp.getvalue()
        return data

    def pieces(self) -> list[bytes]:
        meta = self.ds.file_meta
        meta.MediaStorageSOPInstanceUID = self.ds.SOPInstanceUID
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta, enforce_standard=True)
        return [self._PREAMBLE, fp.getvalue(), *(self._encoded(int(t)) for t in sorted(self.ds.keys()))]

    def write(self, path: Path) -> None:
        with open(path, "wb") as fh:
            fh.writelines(self.pieces())

    def check_against_dcmwrite(self) -> None:
        """Raise if the cached encoding differs from a plain ``dcmwrite``."""
        expected = DicomBytesIO()
        dcmwrite(expected, self.ds, enforce_file_format=True)
        if b"".join(self.pieces()) != expected.getvalue():
            raise AssertionError("template writer output differs from pydicom dcmwrite")


def _read_marker(folder: Path) -> dict[str, object] | None:
    try:
        return json.loads((folder / _MARKER).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def make_ct_corpus(
    folder: str | Path,
    n_files: int,
    rows: int,
    cols: int,
    *,
    seed: int = 0,
    studies: int | None = None,
    series_per_study: int = 3,
) -> list[Path]:
    """Write (or reuse) a synthetic CT corpus; return the file paths in scan order.

    Parameters
    ----------
    folder
        Corpus folder. Files go to ``corpus_root(folder)`` (``folder/dicom``), laid
        out ``study_NNNN/series_NN/IMNNNNN.dcm``; ``folder/corpus.json`` is the cache
        marker.
    n_files, rows, cols
        Number of files and image size (16-bit pixels: ``rows * cols * 2`` bytes each).
    seed
        Changes every UID, the patients' fake names and the pixel noise.
    studies
        Number of studies (one patient per study). Default: about 100 files per series.
    series_per_study
        Series per study; files are spread evenly over all series.
    """
    if n_files < 1 or rows < 1 or cols < 1:
        raise ValueError("n_files, rows and cols must be positive")
    folder = Path(folder)
    spec = CorpusSpec(
        n_files=n_files,
        rows=rows,
        cols=cols,
        seed=seed,
        studies=min(studies or _default_studies(n_files, series_per_study), n_files),
        series_per_study=series_per_study,
    )
    root = corpus_root(folder)
    layout = list(_layout(spec))
    paths = [root / rel for _, _, _, rel in layout]

    marker = _read_marker(folder)
    if marker == asdict(spec) and all(p.is_file() for p in paths):
        return paths

    (folder / _MARKER).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    for d in {p.parent for p in paths}:
        d.mkdir(parents=True, exist_ok=True)

    ds = _template(spec)
    w = _TemplateWriter(ds)
    rng = random.Random(seed)
    thickness = float(ds.SliceThickness)
    ref_item = ds.ReferencedImageSequence[0]
    proc_item = ds.ProcedureCodeSequence[0]
    request = ds.RequestAttributesSequence[0]
    current_study = current_series = -1
    for k, ((study, series, instance, _), path) in enumerate(zip(layout, paths, strict=True)):
        if study != current_study:
            current_study = study
            body, description, code = _BODY[study % len(_BODY)]
            birth_year = rng.randrange(1935, 2005)
            w.set("PatientName", f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}")
            w.set("PatientID", f"P{seed:02d}{study:05d}")
            w.set("OtherPatientIDs", f"NB-{rng.randrange(10**6):06d}")
            w.set("PatientBirthDate", f"{birth_year}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}")
            w.set("PatientSex", rng.choice("FM"))
            w.set("PatientAge", f"{2024 - birth_year:03d}Y")
            w.set("AccessionNumber", f"A{seed:02d}{study:06d}")
            w.set("StudyID", f"S{study:04d}")
            w.set("StudyInstanceUID", _uid(1, seed, study))
            w.set("FrameOfReferenceUID", _uid(4, seed, study))
            w.set("BodyPartExamined", body)
            for kw in ("StudyDescription", "RequestedProcedureDescription", "PerformedProcedureStepDescription"):
                w.set(kw, description)
            proc_item.CodeValue, proc_item.CodeMeaning = code, description
            w.touch("ProcedureCodeSequence")
            w.set("PerformedProcedureStepID", f"PPS{study:04d}")
            request.RequestedProcedureID = f"RP{study:04d}"
            request.ScheduledProcedureStepID = f"SPS{study:04d}"
            request.ScheduledProcedureStepDescription = description
            w.touch("RequestAttributesSequence")
            current_series = -1
        if series != current_series:
            current_series = series
            w.set("SeriesInstanceUID", _uid(2, seed, study, series))
            w.set("SeriesNumber", series + 1)
            w.set("SeriesDescription", _SERIES[series % len(_SERIES)])
            w.set("IrradiationEventUID", _uid(5, seed, study, series))
        w.set("SOPInstanceUID", _uid(3, seed, study, series, instance))
        ref_item.ReferencedSOPInstanceUID = _uid(3, seed, study, series, max(1, instance - 1))
        w.touch("ReferencedImageSequence")
        w.set("InstanceNumber", instance)
        z = f"{-(instance - 1) * thickness:.1f}"
        w.set("SliceLocation", z)
        w.set("ImagePositionPatient", ["-180.0", "-342.0", z])
        if k == 0:
            w.check_against_dcmwrite()
        w.write(path)

    (folder / _MARKER).write_text(json.dumps(asdict(spec), indent=2))
    return paths
