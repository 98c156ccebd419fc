#!/usr/bin/env python
"""Generate the synthetic, deterministic DICOM cohort committed under ``data-samples/``.

Purpose
-------
dicomframe's tests, docs and demos need a small DICOM cohort that looks like a real
research export: several patients with studies a few months apart, mixed modalities,
transfer syntaxes and character sets, and protected health information (PHI) hidden
in every place a real archive hides it (names in descriptions and free text, private
tags and private sequences, nested request sequences, structured-report content,
burned-in pixel text, folder and file names).  Every value is invented; the PHI is
planted on purpose so that tests can check that de-identified output no longer holds
any of it.  ``PLANTED_PHI.json`` lists every planted value per patient.

The generator is deterministic: UIDs are ``2.25.<int>`` values derived from a SHA-256
of a constant seed string and a per-object key, pixel noise comes from a NumPy
generator seeded the same way, all dates and times are constants, and the File Meta
Information carries a fixed implementation UID and name.  Running it twice gives
byte-identical files (for a given pydicom and zlib version: the Deflated file and the
DICOMDIR file meta depend on them).

Layout written under ``--out`` (default ``data-samples`` next to ``scripts/``)::

    cohort/     ~70 valid DICOM files, 5 patients, PHI-leaking folder and file names
    odd/        problem inputs a scanner must report instead of crashing on
    PLANTED_PHI.json
    README.md

Only those four entries are deleted and recreated; anything else in ``--out`` is
left alone.

Usage
-----
    python scripts/make_data_samples.py [--out data-samples]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

__all__ = ["generate", "main"]

# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------

SEED = "dicomframe/data-samples/v1"
"""Constant seed: every UID and every pixel-noise generator is derived from it."""

IMPLEMENTATION_VERSION_NAME = "DICOMFRAME_SMPL"
"""Fixed (0002,0013) so files do not change with the installed pydicom version."""

MAX_TOTAL_BYTES = 2_500_000
"""Size budget for the whole ``data-samples`` folder."""

OWNED_ENTRIES = ("cohort", "odd", "PLANTED_PHI.json", "README.md")
"""The only entries under ``--out`` that this script deletes and recreates."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(f"{SEED}/{key}".encode()).digest()


def make_uid(key: str) -> str:
    """Return a stable ``2.25.<int>`` UID for ``key`` (at most 44 characters).

    >>> make_uid("x") == make_uid("x") and make_uid("x").startswith("2.25.")
    True
    """
    return f"2.25.{int.from_bytes(_digest(key)[:16], 'big')}"


def make_rng(key: str) -> np.random.Generator:
    """Return a NumPy generator seeded from ``SEED`` and ``key`` (order independent)."""
    return np.random.default_rng(int.from_bytes(_digest(key)[:8], "big"))


IMPLEMENTATION_CLASS_UID = make_uid("implementation-class")

# ---------------------------------------------------------------------------
# Cohort description (all values are fictional)
# ---------------------------------------------------------------------------


class Kind(Enum):
    """Kind of series; selects the SOP class and the modules written."""

    CT = "CT"
    CT_REFORMAT = "CT_REFORMAT"
    MR = "MR"
    US = "US"
    US_MULTIFRAME = "US_MULTIFRAME"
    SC = "SC"
    SR_BASIC = "SR_BASIC"
    SR_COMPREHENSIVE = "SR_COMPREHENSIVE"


SOP_CLASS: dict[Kind, UID] = {
    Kind.CT: CTImageStorage,
    Kind.CT_REFORMAT: CTImageStorage,
    Kind.MR: MRImageStorage,
    Kind.US: UltrasoundImageStorage,
    Kind.US_MULTIFRAME: UltrasoundMultiFrameImageStorage,
    Kind.SC: SecondaryCaptureImageStorage,
    Kind.SR_BASIC: BasicTextSRStorage,
    Kind.SR_COMPREHENSIVE: ComprehensiveSRStorage,
}

MODALITY: dict[Kind, str] = {
    Kind.CT: "CT",
    Kind.CT_REFORMAT: "CT",
    Kind.MR: "MR",
    Kind.US: "US",
    Kind.US_MULTIFRAME: "US",
    Kind.SC: "OT",
    Kind.SR_BASIC: "SR",
    Kind.SR_COMPREHENSIVE: "SR",
}

TS_NAME: dict[UID, str] = {
    ExplicitVRLittleEndian: "ExplicitVRLittleEndian",
    ImplicitVRLittleEndian: "ImplicitVRLittleEndian",
    DeflatedExplicitVRLittleEndian: "DeflatedExplicitVRLittleEndian",
    ExplicitVRBigEndian: "ExplicitVRBigEndian",
}

# Safe private attributes, copied from two rows of DICOM PS3.15 Table E.3.10-1
# (creator GEMS_PARM_01): (0043,xx27) SH "Scan Pitch Ratio" and (0043,xx39) IS VM 4
# "1st value is B Value".  These are sample values, not a rule table.
SAFE_PRIVATE_CREATOR = "GEMS_PARM_01"
SAFE_PRIVATE_GROUP = 0x0043
SAFE_PITCH_RATIO = (0x27, "SH", "1.375:1")
SAFE_B_VALUE = (0x39, "IS", [1000, 0, 0, 0])

# A hospital's private block that is NOT safe: it repeats identifiers.
UNSAFE_PRIVATE_CREATOR = "ACME_HOSPITAL_PRIVATE"
UNSAFE_PRIVATE_GROUP = 0x0033


@dataclass(frozen=True)
class Device:
    """General Equipment module values (station and serial are identifying)."""

    manufacturer: str
    model: str
    station: str
    serial: str
    software: str


@dataclass(frozen=True)
class Institution:
    """Institution identity, written in General Equipment and Study modules."""

    name: str
    address: str
    department: str


@dataclass(frozen=True)
class SeriesSpec:
    """One series: its kind, size, encoding and how the export named it on disk."""

    number: int
    kind: Kind
    description: str
    count: int
    ts: UID
    folder: str
    file_name: str  # format string with {n} (instance number) and {uid} (SOP UID)
    device: Device
    performing: str
    operator: str
    protocol: str
    source_series: int | None = None  # derived series: SourceImageSequence target


@dataclass(frozen=True)
class StudySpec:
    """One study (one accession) with its request and its series."""

    key: str
    date: str  # DA
    time: str  # TM
    description: str
    accession: str
    study_id: str
    requested_procedure_id: str
    scheduled_step_id: str
    performed_step_id: str
    indication: str
    body_part: str
    folder: str
    institution: Institution
    referring: str
    reading: str
    requesting: str
    series: tuple[SeriesSpec, ...]


@dataclass(frozen=True)
class PatientSpec:
    """One patient and every identifying value planted for them."""

    key: str
    name: str  # PN, family^given^middle^prefix^suffix
    ascii_family: str  # transliterations used in folder names and burned-in text
    ascii_given: str
    patient_id: str
    issuer: str
    other_ids: tuple[str, ...]
    birth_date: str
    sex: str
    address: str
    phones: tuple[str, ...]
    email: str
    charset: str | None  # SpecificCharacterSet, None = default repertoire
    folder: str
    studies: tuple[StudySpec, ...]

    @property
    def components(self) -> list[str]:
        return [c for c in self.name.split("^") if c]

    @property
    def family(self) -> str:
        return self.components[0]

    @property
    def given(self) -> str:
        return self.components[1]

    @property
    def upper_short(self) -> str:
        """``DOE JANE``: the form technologists type into descriptions."""
        return f"{self.family.upper()} {self.given.upper()}"

    @property
    def natural(self) -> str:
        """``Jane Marie Doe``: the form clinicians type into free text."""
        given = [c for c in self.name.split("^")[1:3] if c]
        return " ".join([*given, self.family])

    @property
    def comma(self) -> str:
        """``DOE, JANE``: the form used in report headers."""
        return f"{self.family.upper()}, {self.given.upper()}"

    @property
    def ascii_upper(self) -> str:
        """``MUELLER JUERGEN``: the form burned into pixels (font is ASCII only)."""
        return f"{self.ascii_family.upper()} {self.ascii_given.upper()}"

    @property
    def python_encoding(self) -> str:
        return {None: "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}[self.charset]


def _dev(manufacturer: str, model: str, station: str, serial: str, sw: str) -> Device:
    return Device(manufacturer, model, station, serial, sw)


SGH = Institution(
    "Springfield General Hospital", "100 Example Parkway, Springfield, EX 00001", "Radiology"
)
RIC = Institution("Riverside Imaging Center", "2 Riverside Drive, Rivertown, EX 00002", "MRI")
KNB = Institution(
    "Klinikum Nordstadt Beispiel", "Musterstraße 12, 99999 Beispielstadt", "Radiologie"
)
LMC = Institution(
    "Lakeside Medical Center", "55 Lakeshore Road, Lakeside, EX 00003", "Diagnostic Imaging"
)

SGH_CT = _dev("GE MEDICAL SYSTEMS", "Revolution CT", "SGHCT01", "CT7731945", "revo_ct_22.1")
SGH_WS = _dev("ACME Imaging", "KeyImage Station", "SGHRADWS3", "WS0044871", "4.2.0")
SGH_RIS = _dev("ACME Imaging", "ReportWriter", "SGHRIS01", "RW2210093", "9.1.3")
RIC_MR = _dev("GE MEDICAL SYSTEMS", "SIGNA Premier", "RICMR2", "MR0088312", "29.1_R01")
KNB_US = _dev("ACME Ultrasound", "SonoView 9", "KNB-US-04", "US55A0771", "3.0.7")
LMC_CT = _dev("GE MEDICAL SYSTEMS", "Optima CT660", "LMCCT1", "CT5520418", "sw_660_12")
LMC_MR = _dev("GE MEDICAL SYSTEMS", "Discovery MR750", "LMCMR1", "MR3309275", "DV26.0_R03")

PATIENTS: tuple[PatientSpec, ...] = (
    PatientSpec(
        key="P1",
        name="Doe^Jane^Marie",
        ascii_family="Doe",
        ascii_given="Jane",
        patient_id="MRN1234567",
        issuer="SGH",
        other_ids=("SGH-00417723", "EMPI90817264"),
        birth_date="19680412",
        sex="F",
        address="1428 Example Lane, Springfield, EX 00001",
        phones=("555-555-0142", "555-555-0187"),
        email="jane.doe@example.org",
        charset=None,
        folder="DOE_JANE_MRN1234567",
        studies=(
            StudySpec(
                key="P1S1",
                date="20230314",
                time="093512",
                description="CT CHEST W/O CONTRAST",
                accession="ACC00482913",
                study_id="SGH23-0314",
                requested_procedure_id="RP7741020",
                scheduled_step_id="SPS7741021",
                performed_step_id="PPS7741022",
                indication="persistent cough",
                body_part="CHEST",
                folder="2023-03-14_CT_CHEST",
                institution=SGH,
                referring="Carter^Emily^R^Dr",
                reading="Okafor^Daniel^^Dr",
                requesting="Carter^Emily^R^Dr",
                series=(
                    SeriesSpec(1, Kind.CT, "CT CHEST AXIAL 5MM", 5, ExplicitVRLittleEndian,
                               "series_1", "IM{n:04d}", SGH_CT, "Okafor^Daniel",
                               "Reyes^Samantha", "CHEST ROUTINE"),
                    SeriesSpec(2, Kind.CT_REFORMAT, "CT CHEST COR for DOE JANE", 3,
                               ImplicitVRLittleEndian, "series_2", "IM{n:04d}", SGH_CT,
                               "Okafor^Daniel", "Reyes^Samantha", "CHEST ROUTINE",
                               source_series=1),
                    SeriesSpec(3, Kind.SC, "KEY IMAGES DOE JANE", 2, ExplicitVRLittleEndian,
                               "series_3", "IM{n:04d}.dcm", SGH_WS, "Okafor^Daniel",
                               "Reyes^Samantha", "KEY IMAGES", source_series=1),
                ),
            ),
            StudySpec(
                key="P1S2",
                date="20230920",
                time="141003",
                description="CT CHEST FOLLOW-UP",
                accession="ACC00519377",
                study_id="SGH23-0920",
                requested_procedure_id="RP7790512",
                scheduled_step_id="SPS7790513",
                performed_step_id="PPS7790514",
                indication="follow-up of 6 mm nodule",
                body_part="CHEST",
                folder="2023-09-20_CT_CHEST_FU",
                institution=SGH,
                referring="Carter^Emily^R^Dr",
                reading="Okafor^Daniel^^Dr",
                requesting="Carter^Emily^R^Dr",
                series=(
                    SeriesSpec(1, Kind.CT, "CT CHEST AXIAL 5MM", 4, ExplicitVRLittleEndian,
                               "series_1", "IM{n:04d}", SGH_CT, "Okafor^Daniel",
                               "Brooks^Taylor", "CHEST ROUTINE"),
                    SeriesSpec(2, Kind.SR_BASIC, "REPORT DOE, JANE", 2, ExplicitVRLittleEndian,
                               "series_2", "SR{n:04d}.dcm", SGH_RIS, "Okafor^Daniel",
                               "Brooks^Taylor", "REPORT"),
                ),
            ),
        ),
    ),
    PatientSpec(
        key="P2",
        name="Smith^John^Robert^^Jr",
        ascii_family="Smith",
        ascii_given="John",
        patient_id="MRN2345678",
        issuer="RIC",
        other_ids=("RIC-2290114",),
        birth_date="19550923",
        sex="M",
        address="9 Sample Court, Rivertown, EX 00002",
        phones=("555-555-0111",),
        email="john.smith@example.org",
        charset=None,
        folder="SMITH_JOHN_MRN2345678",
        studies=(
            StudySpec(
                key="P2S1",
                date="20221102",
                time="080045",
                description="MR BRAIN W/WO CONTRAST",
                accession="ACC00377104",
                study_id="RIC22-1102",
                requested_procedure_id="RP6620871",
                scheduled_step_id="SPS6620872",
                performed_step_id="PPS6620873",
                indication="headache, rule out mass",
                body_part="BRAIN",
                folder="20221102_MR_BRAIN",
                institution=RIC,
                referring="Nakamura^Kenji^^Dr",
                reading="Patel^Priya^^Dr",
                requesting="Nakamura^Kenji^^Dr",
                series=(
                    SeriesSpec(1, Kind.MR, "T1 SAG", 4, ExplicitVRLittleEndian,
                               "SE001_T1_SAG", "IM{n:04d}.dcm", RIC_MR, "Patel^Priya",
                               "Hughes^Owen", "BRAIN ROUTINE"),
                    SeriesSpec(2, Kind.MR, "MR BRAIN T2 AX SMITH J", 4,
                               DeflatedExplicitVRLittleEndian, "SE002_T2_AX", "IM{n:04d}.dcm",
                               RIC_MR, "Patel^Priya", "Hughes^Owen", "BRAIN ROUTINE"),
                    SeriesSpec(3, Kind.MR, "DWI AX B1000", 3, ExplicitVRLittleEndian,
                               "SE003_DWI", "IM{n:04d}.dcm", RIC_MR, "Patel^Priya",
                               "Hughes^Owen", "BRAIN DWI"),
                ),
            ),
            StudySpec(
                key="P2S2",
                date="20230215",
                time="101530",
                description="MR BRAIN FOLLOW-UP",
                accession="ACC00418862",
                study_id="RIC23-0215",
                requested_procedure_id="RP6701155",
                scheduled_step_id="SPS6701156",
                performed_step_id="PPS6701157",
                indication="follow-up, stable?",
                body_part="BRAIN",
                folder="20230215_MR_BRAIN",
                institution=RIC,
                referring="Nakamura^Kenji^^Dr",
                reading="Patel^Priya^^Dr",
                requesting="Nakamura^Kenji^^Dr",
                series=(
                    SeriesSpec(1, Kind.MR, "T1 SAG", 4, ImplicitVRLittleEndian,
                               "SE001_T1_SAG", "IM{n:04d}", RIC_MR, "Patel^Priya",
                               "Hughes^Owen", "BRAIN ROUTINE"),
                ),
            ),
        ),
    ),
    PatientSpec(
        key="P3",
        name="Müller^Jürgen^Heinz",
        ascii_family="Mueller",
        ascii_given="Juergen",
        patient_id="MRN3456789",
        issuer="KNB",
        other_ids=("KNB-7730021",),
        birth_date="19790105",
        sex="M",
        address="Beispielweg 7, 99999 Beispielstadt",
        phones=("+49-555-0134567",),
        email="j.mueller@example.org",
        charset="ISO_IR 192",
        folder="MUELLER_JUERGEN_MRN3456789",
        studies=(
            StudySpec(
                key="P3S1",
                date="20230621",
                time="112200",
                description="US ABDOMEN MÜLLER",
                accession="ACC00455120",
                study_id="KNB23-0621",
                requested_procedure_id="RP5530017",
                scheduled_step_id="SPS5530018",
                performed_step_id="PPS5530019",
                indication="Oberbauchschmerzen",
                body_part="ABDOMEN",
                folder="Study 2023-06-21 US ABDOMEN",
                institution=KNB,
                referring="Schäfer^Anna^^Dr. med.",
                reading="Weiß^Lukas^^Dr. med.",
                requesting="Schäfer^Anna^^Dr. med.",
                series=(
                    SeriesSpec(1, Kind.US, "ABDOMEN B-MODE", 3, ExplicitVRLittleEndian,
                               "series 1", "US_{n:03d}.DCM", KNB_US, "Weiß^Lukas",
                               "Köhler^Miriam", "ABDOMEN"),
                    SeriesSpec(2, Kind.US_MULTIFRAME, "ABDOMEN CINE JÜRGEN MÜLLER", 2,
                               ExplicitVRLittleEndian, "series 2", "US_{n:03d}.DCM", KNB_US,
                               "Weiß^Lukas", "Köhler^Miriam", "ABDOMEN"),
                ),
            ),
            StudySpec(
                key="P3S2",
                date="20240110",
                time="083000",
                description="US ABDOMEN KONTROLLE",
                accession="ACC00560431",
                study_id="KNB24-0110",
                requested_procedure_id="RP5611042",
                scheduled_step_id="SPS5611043",
                performed_step_id="PPS5611044",
                indication="Kontrolle Leberläsion",
                body_part="ABDOMEN",
                folder="Study 2024-01-10 US ABDOMEN",
                institution=KNB,
                referring="Schäfer^Anna^^Dr. med.",
                reading="Weiß^Lukas^^Dr. med.",
                requesting="Schäfer^Anna^^Dr. med.",
                series=(
                    SeriesSpec(1, Kind.US, "ABDOMEN B-MODE", 2, ImplicitVRLittleEndian,
                               "series 1", "US_{n:03d}.DCM", KNB_US, "Weiß^Lukas",
                               "Köhler^Miriam", "ABDOMEN"),
                ),
            ),
        ),
    ),
    PatientSpec(
        key="P4",
        name="Åström^Sven^Erik",
        ascii_family="Astrom",
        ascii_given="Sven",
        patient_id="MRN4567890",
        issuer="LMC",
        other_ids=("LMC-0093318", "EMPI90822107"),
        birth_date="19611130",
        sex="M",
        address="Sjövägen 3, 999 99 Exempelby",
        phones=("+46-555-0178",),
        email="sven.astrom@example.org",
        charset="ISO_IR 100",
        folder="ASTROM_SVEN_MRN4567890",
        studies=(
            StudySpec(
                key="P4S1",
                date="20220830",
                time="154510",
                description="CT ABD/PELVIS ÅSTRÖM",
                accession="ACC00351298",
                study_id="LMC22-0830",
                requested_procedure_id="RP4410233",
                scheduled_step_id="SPS4410234",
                performed_step_id="PPS4410235",
                indication="abdominal pain, weight loss",
                body_part="ABDOMEN",
                folder="ACC00351298_CT_ABD",
                institution=LMC,
                referring="Lindqvist^Åsa^^Dr",
                reading="Brennan^Liam^^Dr",
                requesting="Lindqvist^Åsa^^Dr",
                series=(
                    SeriesSpec(1, Kind.CT, "ABD/PELVIS 5MM", 6, ExplicitVRLittleEndian,
                               "uid", "IM{n:04d}.dcm", LMC_CT, "Brennan^Liam",
                               "Kowalski^Marta", "ABD PELVIS"),
                    SeriesSpec(2, Kind.CT, "ABD BONE 5MM", 3, ExplicitVRBigEndian, "uid",
                               "IM{n:04d}.dcm", LMC_CT, "Brennan^Liam", "Kowalski^Marta",
                               "ABD PELVIS"),
                ),
            ),
            StudySpec(
                key="P4S2",
                date="20230112",
                time="104020",
                description="MR LIVER",
                accession="ACC00399640",
                study_id="LMC23-0112",
                requested_procedure_id="RP4498120",
                scheduled_step_id="SPS4498121",
                performed_step_id="PPS4498122",
                indication="characterise liver lesion",
                body_part="LIVER",
                folder="ACC00399640_MR_LIVER",
                institution=LMC,
                referring="Lindqvist^Åsa^^Dr",
                reading="Brennan^Liam^^Dr",
                requesting="Lindqvist^Åsa^^Dr",
                series=(
                    SeriesSpec(1, Kind.MR, "T2 HASTE AX", 5, ExplicitVRLittleEndian, "uid",
                               "IM{n:04d}.dcm", LMC_MR, "Brennan^Liam", "Kowalski^Marta",
                               "LIVER"),
                    SeriesSpec(2, Kind.MR, "T1 DIXON AX ÅSTRÖM", 3, ExplicitVRLittleEndian,
                               "uid", "IM{n:04d}.dcm", LMC_MR, "Brennan^Liam",
                               "Kowalski^Marta", "LIVER"),
                ),
            ),
        ),
    ),
    PatientSpec(
        key="P5",
        name="Rivera^Carlos^Miguel",
        ascii_family="Rivera",
        ascii_given="Carlos",
        patient_id="MRN5678901",
        issuer="RIC",
        other_ids=("RIC-3318870",),
        birth_date="19900717",
        sex="M",
        address="77 Placeholder Avenue, Rivertown, EX 00002",
        phones=("555-555-0163",),
        email="carlos.rivera@example.org",
        charset=None,
        folder="RIVERA_CARLOS_MRN5678901",
        studies=(
            StudySpec(
                key="P5S1",
                date="20240108",
                time="161245",
                description="MR KNEE LEFT",
                accession="ACC00558802",
                study_id="RIC24-0108",
                requested_procedure_id="RP6980044",
                scheduled_step_id="SPS6980045",
                performed_step_id="PPS6980046",
                indication="twisting injury, soccer",
                body_part="KNEE",
                folder="2024-01-08_MR_KNEE_LT",
                institution=RIC,
                referring="Nakamura^Kenji^^Dr",
                reading="Patel^Priya^^Dr",
                requesting="Nakamura^Kenji^^Dr",
                series=(
                    SeriesSpec(1, Kind.MR, "PD SAG FS", 5, ExplicitVRLittleEndian,
                               "series_01", "{uid}.dcm", RIC_MR, "Patel^Priya",
                               "Hughes^Owen", "KNEE"),
                    SeriesSpec(2, Kind.MR, "T2 COR RIVERA", 4, ImplicitVRLittleEndian,
                               "series_02", "{uid}.dcm", RIC_MR, "Patel^Priya",
                               "Hughes^Owen", "KNEE"),
                    SeriesSpec(3, Kind.SR_COMPREHENSIVE, "MR KNEE REPORT", 2,
                               ExplicitVRLittleEndian, "series_03_SR", "{uid}.dcm", RIC_MR,
                               "Patel^Priya", "Hughes^Owen", "REPORT"),
                ),
            ),
            StudySpec(
                key="P5S2",
                date="20240402",
                time="120130",
                description="CT KNEE LEFT",
                accession="ACC00601157",
                study_id="RIC24-0402",
                requested_procedure_id="RP7022310",
                scheduled_step_id="SPS7022311",
                performed_step_id="PPS7022312",
                indication="pre-operative planning",
                body_part="KNEE",
                folder="2024-04-02_CT_KNEE_LT",
                institution=SGH,
                referring="Nakamura^Kenji^^Dr",
                reading="Okafor^Daniel^^Dr",
                requesting="Nakamura^Kenji^^Dr",
                series=(
                    SeriesSpec(1, Kind.CT, "KNEE BONE 1MM", 4, ExplicitVRLittleEndian,
                               "series_01", "{uid}.dcm", SGH_CT, "Okafor^Daniel",
                               "Reyes^Samantha", "KNEE"),
                ),
            ),
        ),
    ),
)

# ---------------------------------------------------------------------------
# UIDs (pure functions of the keys, so cross references need no bookkeeping)
# ---------------------------------------------------------------------------


def study_uid(study: StudySpec) -> str:
    return make_uid(f"study/{study.key}")


def series_uid(study: StudySpec, number: int) -> str:
    return make_uid(f"series/{study.key}/{number}")


def sop_uid(study: StudySpec, series_number: int, instance: int) -> str:
    return make_uid(f"sop/{study.key}/{series_number}/{instance}")


def frame_of_reference_uid(study: StudySpec, modality: str) -> str:
    """One frame of reference per study and modality (shared by its series)."""
    return make_uid(f"for/{study.key}/{modality}")


# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------

ImageU8 = npt.NDArray[np.uint8]
ImageU16 = npt.NDArray[np.uint16]

# 3x5 bitmap font; enough to burn names, MRNs and dates into pixels.
_FONT_ROWS: dict[str, str] = {
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011",
    "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111",
    "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010",
    "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111",
    "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "0": "111101101101111",
    "1": "010110010010111", "2": "110001010100111", "3": "110001010001110",
    "4": "101101111001001", "5": "111100110001110", "6": "011100111101111",
    "7": "111001010010010", "8": "111101111101111", "9": "111101111001110",
    "-": "000000111000000", ":": "000010000010000", "/": "001001010100100",
    ".": "000000000000010", ",": "000000000010100", " ": "000000000000000",
}


def burn_text(img: npt.NDArray[np.uint8], text: str, x: int, y: int, scale: int,
              value: int | tuple[int, int, int]) -> None:
    """Draw ``text`` (upper-case ASCII) into ``img`` in place with a blocky 3x5 font."""
    for i, char in enumerate(text.upper()):
        bits = _FONT_ROWS.get(char, _FONT_ROWS[" "])
        for row in range(5):
            for col in range(3):
                if bits[row * 3 + col] == "1":
                    y0, x0 = y + row * scale, x + (i * 4 + col) * scale
                    img[y0:y0 + scale, x0:x0 + scale] = value


def _disc_mask(size: int, cy: float, cx: float, ry: float, rx: float) -> npt.NDArray[np.bool_]:
    yy, xx = np.mgrid[0:size, 0:size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def ct_slice(key: str, position: int, size: int = 64) -> ImageU16:
    """A body-like ellipse with lungs and a spine, stored as HU + 1024 in 12 bits."""
    rng = make_rng(key)
    hu = np.full((size, size), -1000.0)
    hu[_disc_mask(size, size / 2, size / 2, size * 0.36, size * 0.45)] = 40.0
    for cx in (size * 0.32, size * 0.68):
        hu[_disc_mask(size, size * 0.45, cx, size * 0.22, size * 0.13 + position)] = -850.0
    hu[_disc_mask(size, size * 0.74, size / 2, size * 0.07, size * 0.07)] = 700.0
    hu += rng.normal(0.0, 12.0, hu.shape)
    return np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)


def mr_slice(key: str, position: int, size: int = 64) -> ImageU16:
    """A head/limb-like blob with an inner structure and Rician-ish noise, 12 bits."""
    rng = make_rng(key)
    img = np.zeros((size, size))
    img[_disc_mask(size, size / 2, size / 2, size * 0.42, size * 0.36)] = 900.0
    img[_disc_mask(size, size / 2, size / 2, size * 0.2, size * 0.12 + position)] = 1800.0
    img += np.abs(rng.normal(0.0, 40.0, img.shape))
    return np.clip(img, 0, 4095).astype(np.uint16)


def us_frame(key: str, size: int) -> ImageU8:
    """A speckled ultrasound sector on black, as RGB."""
    rng = make_rng(key)
    yy, xx = np.mgrid[0:size, 0:size]
    angle = np.arctan2(xx - size / 2, yy + size * 0.1)
    radius = np.hypot(xx - size / 2, yy + size * 0.1)
    sector = (np.abs(angle) < 0.6) & (radius > size * 0.25) & (radius < size * 1.05)
    gray = np.where(sector, rng.gamma(2.0, 40.0, (size, size)), 0.0)
    rgb = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return rgb


# ---------------------------------------------------------------------------
# Dataset construction
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """Everything needed to build one instance."""

    patient: PatientSpec
    study: StudySpec
    series: SeriesSpec
    instance: int  # 1-based

    @property
    def sop_uid(self) -> str:
        return sop_uid(self.study, self.series.number, self.instance)

    @property
    def key(self) -> str:
        return f"{self.study.key}/{self.series.number}/{self.instance}"

    @property
    def prior_study(self) -> StudySpec | None:
        idx = self.patient.studies.index(self.study)
        return self.patient.studies[idx - 1] if idx > 0 else None

    @property
    def series_time(self) -> str:
        return _add_minutes(self.study.time, 3 * self.series.number)

    @property
    def content_time(self) -> str:
        return _add_minutes(self.study.time, 3 * self.series.number + self.instance)


def _add_minutes(tm: str, minutes: int) -> str:
    base = dt.datetime.strptime(tm, "%H%M%S") + dt.timedelta(minutes=minutes)
    return base.strftime("%H%M%S")


def iso(da: str) -> str:
    """``20230314`` -> ``2023-03-14``."""
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def us_date(da: str) -> str:
    """``20230314`` -> ``03/14/2023``."""
    return f"{da[4:6]}/{da[6:]}/{da[:4]}"


def age(birth: str, on: str) -> str:
    b, o = dt.date.fromisoformat(iso(birth)), dt.date.fromisoformat(iso(on))
    years = o.year - b.year - ((o.month, o.day) < (b.month, b.day))
    return f"{years:03d}Y"


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def sop_ref(sop_class: str, instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = instance_uid
    return item


def order_numbers(study: StudySpec) -> tuple[str, str]:
    """Placer and filler order numbers (written in SR ReferencedRequestSequence)."""
    return f"PO{study.accession[3:]}", f"FO{study.accession[3:]}"


def physician_family(pn: str) -> str:
    return pn.split("^")[0]


def history_text(c: Ctx) -> str:
    """Free text for AdditionalPatientHistory: name, MRN, birth date and dates."""
    p, s = c.patient, c.study
    prior = c.prior_study
    tail = f" Prior exam {us_date(prior.date)}." if prior else ""
    return (f"{p.natural} ({p.patient_id}), DOB {us_date(p.birth_date)}, seen {us_date(s.date)} "
            f"by Dr. {physician_family(s.referring)} for {s.indication}.{tail} "
            f"Call {p.phones[0]} with results.")


def comment_text(c: Ctx) -> str:
    """Free text for ImageComments: the technologist's note."""
    return (f"{c.patient.upper_short} {c.patient.patient_id} scanned {iso(c.study.date)} "
            f"by {physician_family(c.series.operator)}")


def base_dataset(c: Ctx) -> Dataset:
    """Patient, study, series, equipment and SOP common modules shared by all kinds."""
    p, s, se = c.patient, c.study, c.series
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = se.ts
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[se.kind]
    ds.file_meta.MediaStorageSOPInstanceUID = c.sop_uid
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    if p.charset is not None:
        ds.SpecificCharacterSet = p.charset
    ds.InstanceCreationDate = s.date
    ds.InstanceCreationTime = c.content_time
    ds.SOPClassUID = SOP_CLASS[se.kind]
    ds.SOPInstanceUID = c.sop_uid
    ds.StudyDate = s.date
    ds.SeriesDate = s.date
    ds.ContentDate = s.date
    ds.StudyTime = s.time
    ds.SeriesTime = c.series_time
    ds.ContentTime = c.content_time
    ds.AccessionNumber = s.accession
    ds.Modality = MODALITY[se.kind]
    ds.Manufacturer = se.device.manufacturer
    ds.InstitutionName = s.institution.name
    ds.InstitutionAddress = s.institution.address
    ds.ReferringPhysicianName = s.referring
    ds.StationName = se.device.station
    ds.StudyDescription = s.description
    ds.SeriesDescription = se.description
    ds.InstitutionalDepartmentName = s.institution.department
    ds.PhysiciansOfRecord = s.referring
    ds.PerformingPhysicianName = se.performing
    ds.NameOfPhysiciansReadingStudy = s.reading
    ds.OperatorsName = se.operator
    ds.ManufacturerModelName = se.device.model

    prior = c.prior_study
    if prior is not None:
        ds.ReferencedStudySequence = DicomSequence(
            [sop_ref("1.2.840.10008.3.1.2.3.1", study_uid(prior))]
        )

    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = p.issuer
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.OtherPatientIDs = list(p.other_ids) if len(p.other_ids) > 1 else p.other_ids[0]
    other_items: list[Dataset] = []
    for other in p.other_ids:
        item = Dataset()
        item.PatientID = other
        item.IssuerOfPatientID = other.split("-")[0] if "-" in other else "EMPI"
        item.TypeOfPatientID = "TEXT"
        other_items.append(item)
    ds.OtherPatientIDsSequence = DicomSequence(other_items)
    ds.PatientAge = age(p.birth_date, s.date)
    ds.PatientSize = "1.72"
    ds.PatientWeight = "71"
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = list(p.phones) if len(p.phones) > 1 else p.phones[0]
    ds.PatientTelecomInformation = p.email
    ds.AdditionalPatientHistory = history_text(c)

    ds.BodyPartExamined = s.body_part
    ds.DeviceSerialNumber = se.device.serial
    ds.SoftwareVersions = se.device.software
    ds.ProtocolName = se.protocol

    ds.StudyInstanceUID = study_uid(s)
    ds.SeriesInstanceUID = series_uid(s, se.number)
    ds.StudyID = s.study_id
    ds.SeriesNumber = se.number
    ds.InstanceNumber = c.instance

    ds.RequestingPhysician = s.requesting
    ds.PerformedProcedureStepStartDate = s.date
    ds.PerformedProcedureStepStartTime = s.time
    ds.PerformedProcedureStepID = s.performed_step_id
    ds.PerformedProcedureStepDescription = s.description
    ds.RequestAttributesSequence = DicomSequence([request_attributes(c)])
    ds.ReasonForTheRequestedProcedure = f"{s.indication} ({p.upper_short})"
    return ds


def request_attributes(c: Ctx) -> Dataset:
    """One (0040,0275) item with IDs, accession and a nested protocol code sequence."""
    s = c.study
    item = Dataset()
    item.AccessionNumber = s.accession
    item.StudyInstanceUID = study_uid(s)
    item.RequestedProcedureDescription = s.description
    item.RequestedProcedureID = s.requested_procedure_id
    item.ScheduledProcedureStepDescription = f"{s.description} for {c.patient.comma}"
    item.ScheduledProcedureStepID = s.scheduled_step_id
    item.ScheduledProtocolCodeSequence = DicomSequence(
        [code(f"{s.body_part[:4]}-{c.series.number:02d}", "99ACME", c.series.protocol)]
    )
    return item


def add_general_image(ds: Dataset, c: Ctx) -> None:
    s = c.study
    ds.AcquisitionDate = s.date
    ds.AcquisitionTime = c.content_time
    ds.AcquisitionNumber = 1
    ds.PatientOrientation = ""
    if c.instance == 1:
        ds.ImageComments = comment_text(c)
    ds.LossyImageCompression = "00"


def add_frame_of_reference(ds: Dataset, c: Ctx, position: float) -> None:
    ds.FrameOfReferenceUID = frame_of_reference_uid(c.study, MODALITY[c.series.kind])
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-160.0, -160.0, position]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = position
    ds.PixelSpacing = [5.0, 5.0]


def add_references(ds: Dataset, c: Ctx) -> None:
    """ReferencedImageSequence / SourceImageSequence pointing at other cohort instances."""
    s, se = c.study, c.series
    sop_class = SOP_CLASS[se.kind]
    if se.source_series is not None:
        src = next(x for x in s.series if x.number == se.source_series)
        first = min(c.instance, src.count)
        refs = [sop_ref(SOP_CLASS[src.kind], sop_uid(s, src.number, i))
                for i in sorted({first, min(first + 1, src.count)})]
        ds.SourceImageSequence = DicomSequence(refs)
        ds.DerivationDescription = f"Derived from series {src.number} of {iso(s.date)}"
    elif se.number > 1:
        first = s.series[0]
        ds.ReferencedImageSequence = DicomSequence(
            [sop_ref(SOP_CLASS[first.kind], sop_uid(s, first.number, 1))]
        )
    elif c.prior_study is not None:
        prior = c.prior_study
        ps = prior.series[0]
        if SOP_CLASS[ps.kind] == sop_class:
            ds.ReferencedImageSequence = DicomSequence(
                [sop_ref(SOP_CLASS[ps.kind], sop_uid(prior, ps.number, 1))]
            )


def set_pixels(ds: Dataset, pixels: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
               big_endian: bool) -> None:
    """Set (7FE0,0010) with an explicit VR, byte-swapping OW data for big endian files."""
    if pixels.dtype == np.uint16:
        data = pixels.astype(">u2" if big_endian else "<u2").tobytes()
        ds.add_new(0x7FE00010, "OW", data)
    else:
        ds.add_new(0x7FE00010, "OB", pixels.tobytes())


def add_grayscale16(ds: Dataset, pixels: ImageU16, c: Ctx) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    set_pixels(ds, pixels, c.series.ts == ExplicitVRBigEndian)


def add_private_blocks(ds: Dataset, c: Ctx) -> None:
    """One safe GE block (CT/MR) and one unsafe hospital block holding identifiers."""
    kind = c.series.kind
    if kind in (Kind.CT, Kind.CT_REFORMAT) and c.series.device.manufacturer.startswith("GE"):
        block = ds.private_block(SAFE_PRIVATE_GROUP, SAFE_PRIVATE_CREATOR, create=True)
        block.add_new(*SAFE_PITCH_RATIO)
    elif kind is Kind.MR and "DWI" in c.series.description:
        block = ds.private_block(SAFE_PRIVATE_GROUP, SAFE_PRIVATE_CREATOR, create=True)
        block.add_new(*SAFE_B_VALUE)

    acme = ds.private_block(UNSAFE_PRIVATE_GROUP, UNSAFE_PRIVATE_CREATOR, create=True)
    acme.add_new(0x01, "LO", c.patient.patient_id)
    acme.add_new(0x02, "LO", c.patient.name)
    order = Dataset()
    nested = order.private_block(UNSAFE_PRIVATE_GROUP, UNSAFE_PRIVATE_CREATOR, create=True)
    nested.add_new(0x11, "LO", c.study.accession)
    nested.add_new(0x12, "LO", c.study.requested_procedure_id)
    acme.add_new(0x10, "SQ", DicomSequence([order]))


def build_ct(c: Ctx) -> Dataset:
    ds = base_dataset(c)
    reformat = c.series.kind is Kind.CT_REFORMAT
    ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"] if reformat else [
        "ORIGINAL", "PRIMARY", "AXIAL"]
    add_general_image(ds, c)
    ds.KVP = "120"
    ds.SliceThickness = "5"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "320"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "600"
    ds.XRayTubeCurrent = "250"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    add_frame_of_reference(ds, c, position=-100.0 + 5.0 * c.instance)
    add_references(ds, c)
    pixels = ct_slice(c.key, c.instance % 3)
    add_grayscale16(ds, pixels, c)
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    add_private_blocks(ds, c)
    return ds


def build_mr(c: Ctx) -> Dataset:
    ds = base_dataset(c)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    add_general_image(ds, c)
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = "4"
    ds.RepetitionTime = "500" if "T1" in c.series.description else "4000"
    ds.EchoTime = "12" if "T1" in c.series.description else "90"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "3"
    ds.ImagingFrequency = "127.7"
    ds.ImagedNucleus = "1H"
    ds.NumberOfAverages = "1"
    ds.AcquisitionDateTime = f"{c.study.date}{c.content_time}"
    ds.PatientPosition = "HFS"
    add_frame_of_reference(ds, c, position=-20.0 + 4.0 * c.instance)
    add_references(ds, c)
    pixels = mr_slice(c.key, c.instance % 3)
    add_grayscale16(ds, pixels, c)
    ds.WindowCenter = "1000"
    ds.WindowWidth = "2000"
    add_private_blocks(ds, c)
    return ds


def build_us(c: Ctx) -> Dataset:
    """Single-frame RGB ultrasound with the patient name burned into the pixels."""
    ds = base_dataset(c)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    add_general_image(ds, c)
    add_references(ds, c)
    rgb = us_frame(c.key, 128)
    p = c.patient
    burn_text(rgb, p.ascii_upper, 2, 2, 2, (255, 255, 0))
    burn_text(rgb, p.patient_id, 2, 14, 2, (255, 255, 0))
    burn_text(rgb, iso(c.study.date), 2, 26, 2, (255, 255, 0))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    set_pixels(ds, rgb, big_endian=False)
    add_private_blocks(ds, c)
    return ds


def build_us_multiframe(c: Ctx) -> Dataset:
    """Four-frame RGB cine loop (Ultrasound Multi-frame Image Storage)."""
    ds = base_dataset(c)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    add_general_image(ds, c)
    add_references(ds, c)
    frames = np.stack([us_frame(f"{c.key}/frame{f}", 64) for f in range(4)])
    ds.NumberOfFrames = 4
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = "40.0"
    ds.CineRate = 25
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    set_pixels(ds, frames, big_endian=False)
    add_private_blocks(ds, c)
    return ds


def build_sc(c: Ctx) -> Dataset:
    """Secondary capture key image: a CT slice with name, MRN and date burned in."""
    ds = base_dataset(c)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    add_general_image(ds, c)
    ds.ConversionType = "WSD"
    ds.DateOfSecondaryCapture = c.study.date
    ds.TimeOfSecondaryCapture = c.content_time
    add_references(ds, c)
    ct = ct_slice(f"{c.key}/sc", c.instance).astype(np.float64)
    img = np.clip((ct - 1024.0 + 160.0) / 400.0 * 255.0, 0, 255).astype(np.uint8)
    img = np.kron(img, np.ones((2, 2), dtype=np.uint8))
    p = c.patient
    burn_text(img, p.ascii_upper, 2, 2, 2, 255)
    burn_text(img, p.patient_id, 2, 14, 2, 255)
    burn_text(img, iso(c.study.date), 2, 26, 2, 255)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    set_pixels(ds, img, big_endian=False)
    add_private_blocks(ds, c)
    return ds


def sr_item(relationship: str, value_type: str, concept: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([concept])
    return item


def evidence_series(c: Ctx) -> SeriesSpec:
    """The image series a report is about: the study's first image series."""
    return next(x for x in c.study.series if x.kind not in (Kind.SR_BASIC, Kind.SR_COMPREHENSIVE))


def build_sr(c: Ctx) -> Dataset:
    """Basic Text or Comprehensive SR whose content tree holds names and dates."""
    ds = base_dataset(c)
    p, s = c.patient, c.study
    final = c.instance == c.series.count
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = DicomSequence([template])
    ds.CompletionFlag = "COMPLETE" if final else "PARTIAL"
    ds.VerificationFlag = "VERIFIED" if final else "UNVERIFIED"
    if final:
        observer = Dataset()
        observer.VerifyingObserverName = s.reading
        observer.VerifyingOrganization = s.institution.name
        observer.VerificationDateTime = f"{s.date}{c.content_time}"
        observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
        ds.VerifyingObserverSequence = DicomSequence([observer])
    ds.PerformedProcedureCodeSequence = DicomSequence()
    # SR documents carry the order in ReferencedRequestSequence, not (0040,0275).
    request = request_attributes(c)
    del ds.RequestAttributesSequence
    order = Dataset()
    order.StudyInstanceUID = study_uid(s)
    order.AccessionNumber = s.accession
    order.RequestedProcedureDescription = s.description
    order.RequestedProcedureCodeSequence = DicomSequence()
    order.RequestedProcedureID = s.requested_procedure_id
    order.PlacerOrderNumberImagingServiceRequest, order.FillerOrderNumberImagingServiceRequest = (
        order_numbers(s))
    order.ScheduledProtocolCodeSequence = request.ScheduledProtocolCodeSequence
    ds.ReferencedRequestSequence = DicomSequence([order])

    src = evidence_series(c)
    src_class = SOP_CLASS[src.kind]
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid(s, src.number)
    ref_series.ReferencedSOPSequence = DicomSequence(
        [sop_ref(src_class, sop_uid(s, src.number, i)) for i in range(1, src.count + 1)]
    )
    evidence = Dataset()
    evidence.StudyInstanceUID = study_uid(s)
    evidence.ReferencedSeriesSequence = DicomSequence([ref_series])
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([evidence])

    observer_name = sr_item("HAS OBS CONTEXT", "PNAME",
                            code("121008", "DCM", "Person Observer Name"))
    observer_name.PersonName = s.reading
    subject_name = sr_item("HAS OBS CONTEXT", "PNAME", code("121029", "DCM", "Subject Name"))
    subject_name.PersonName = p.name
    history = sr_item("CONTAINS", "TEXT", code("121060", "DCM", "History"))
    history.TextValue = (f"{p.natural}, {p.patient_id}, born {us_date(p.birth_date)}. "
                         f"{s.indication.capitalize()}. "
                         f"Referred by Dr. {physician_family(s.referring)}.")
    finding = sr_item("CONTAINS", "TEXT", code("121071", "DCM", "Finding"))
    prior = c.prior_study
    compare = f"Compared with {iso(prior.date)}." if prior else "No prior imaging."
    finding.TextValue = (f"{p.comma} examined {us_date(s.date)} ({s.accession}). {compare} "
                         "Findings are synthetic test content.")
    exam_date = sr_item("CONTAINS", "DATE", code("111060", "DCM", "Study Date"))
    exam_date.Date = s.date
    items = [observer_name, subject_name, history, finding, exam_date]
    if c.series.kind is Kind.SR_COMPREHENSIVE:
        image = sr_item("CONTAINS", "IMAGE", code("121080", "DCM", "Best illustration of finding"))
        image.ReferencedSOPSequence = DicomSequence(
            [sop_ref(src_class, sop_uid(s, src.number, 1))]
        )
        items.append(image)
    ds.ContentSequence = DicomSequence(items)
    return ds


BUILDERS: dict[Kind, Callable[[Ctx], Dataset]] = {
    Kind.CT: build_ct,
    Kind.CT_REFORMAT: build_ct,
    Kind.MR: build_mr,
    Kind.US: build_us,
    Kind.US_MULTIFRAME: build_us_multiframe,
    Kind.SC: build_sc,
    Kind.SR_BASIC: build_sr,
    Kind.SR_COMPREHENSIVE: build_sr,
}


def write_dataset(ds: Dataset, path: Path) -> None:
    """Write with a 128-byte zero preamble and File Meta from ``ds.file_meta``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------
# Cohort, odd files, manifest
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """A generated cohort file (paths are relative to ``--out``, POSIX style)."""

    ctx: Ctx
    rel_path: str


def iter_contexts() -> Iterator[Ctx]:
    for p in PATIENTS:
        for s in p.studies:
            for se in s.series:
                for i in range(1, se.count + 1):
                    yield Ctx(p, s, se, i)


def relative_path(c: Ctx) -> str:
    se = c.series
    series_folder = series_uid(c.study, se.number) if se.folder == "uid" else se.folder
    name = se.file_name.format(n=c.instance, uid=c.sop_uid)
    return f"cohort/{c.patient.folder}/{c.study.folder}/{series_folder}/{name}"


def write_cohort(out: Path) -> list[Written]:
    written: list[Written] = []
    for c in iter_contexts():
        ds = BUILDERS[c.series.kind](c)
        rel = relative_path(c)
        write_dataset(ds, out / rel)
        written.append(Written(c, rel))
    return written


def pixel_data_offset(path: Path) -> int:
    """Offset of the (7FE0,0010) value: Pixel Data is the last element we write."""
    ds = pydicom.dcmread(path)
    return path.stat().st_size - len(ds.PixelData)


def write_odd(out: Path, written: list[Written]) -> dict[str, dict[str, str]]:
    """Problem inputs: not DICOM, empty, truncated, no File Meta, and a DICOMDIR."""
    odd = out / "odd"
    odd.mkdir(parents=True)
    by_key = {w.ctx.key: w for w in written}
    manifest: dict[str, dict[str, str]] = {}

    jane = PATIENTS[0]
    (odd / "notes.txt").write_text(
        f"Export notes {iso(jane.studies[0].date)}\n"
        f"Patient {jane.natural} ({jane.patient_id}), DOB {us_date(jane.birth_date)}.\n"
        f"Contact: {jane.phones[0]}, {jane.email}\n"
        "Please re-send the follow-up CT; series 2 failed to transfer.\n",
        encoding="ascii",
    )
    manifest["odd/notes.txt"] = {"problem": "not_dicom", "patient": jane.patient_id}

    (odd / "empty.dcm").write_bytes(b"")
    manifest["odd/empty.dcm"] = {"problem": "empty_file", "patient": ""}

    # Truncated in the middle of the data set header: inside the AdditionalPatientHistory
    # value, so its declared length runs past the end of the file.  pydicom 3 reads
    # this without raising (the value comes back short, later elements are missing).
    src = by_key["P2S1/1/1"]
    raw = (out / src.rel_path).read_bytes()
    history = history_text(src.ctx).encode("ascii")
    cut = raw.index(history) + len(history) // 2
    (odd / "truncated_header.dcm").write_bytes(raw[:cut])
    manifest["odd/truncated_header.dcm"] = {
        "problem": "truncated_header", "patient": src.ctx.patient.patient_id,
        "source": src.rel_path,
    }

    # Header intact, second half of the pixel bytes missing (declared length unchanged).
    src = by_key["P1S1/1/2"]
    raw = (out / src.rel_path).read_bytes()
    pixel_bytes = len(raw) - pixel_data_offset(out / src.rel_path)
    (odd / "truncated_pixels.dcm").write_bytes(raw[: len(raw) - pixel_bytes // 2])
    manifest["odd/truncated_pixels.dcm"] = {
        "problem": "truncated_pixel_data", "patient": src.ctx.patient.patient_id,
        "source": src.rel_path,
    }

    # A bare Implicit VR data set: no preamble, no 'DICM', no File Meta.
    src = by_key["P5S1/1/1"]
    ds = pydicom.dcmread(out / src.rel_path)
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    dcmwrite(odd / "no_file_meta.dcm", ds, implicit_vr=True, little_endian=True)
    manifest["odd/no_file_meta.dcm"] = {
        "problem": "no_preamble_no_file_meta", "patient": src.ctx.patient.patient_id,
        "source": src.rel_path,
    }

    # A DICOMDIR file-set over two instances of patient P1.
    fs = FileSet()
    fs.ID = "DFSAMPLES"
    fs.UID = UID(make_uid("fileset"))
    for key in ("P1S1/1/1", "P1S1/1/2"):
        fs.add(pydicom.dcmread(out / by_key[key].rel_path))
    (odd / "dicomdir").mkdir()
    fs.write(odd / "dicomdir")
    # pydicom leaves its staging directory to a finalizer (ResourceWarning); clean it now.
    stage = getattr(fs, "_stage", {}).get("t")
    if isinstance(stage, TemporaryDirectory):
        stage.cleanup()
    for path in sorted((odd / "dicomdir").rglob("*")):
        if path.is_file():
            rel = path.relative_to(out).as_posix()
            manifest[rel] = {
                "problem": "dicomdir" if path.name == "DICOMDIR" else "fileset_member_copy",
                "patient": jane.patient_id,
            }
    return manifest


def _has_sr(study: StudySpec) -> bool:
    return any(se.kind in (Kind.SR_BASIC, Kind.SR_COMPREHENSIVE) for se in study.series)


def _has_burned_in_text(p: PatientSpec) -> bool:
    return any(se.kind in (Kind.US, Kind.SC) for s in p.studies for se in s.series)


def name_forms(p: PatientSpec) -> list[str]:
    """Every exact textual form of the patient name planted somewhere (incl. paths)."""
    forms = [p.name, p.name.upper(), p.upper_short, p.natural, p.comma]
    if _has_burned_in_text(p):
        forms.append(p.ascii_upper)
    forms.append(f"{p.ascii_family.upper()}_{p.ascii_given.upper()}")
    return list(dict.fromkeys(forms))


def components(names: Sequence[str]) -> list[str]:
    """Distinct PN components longer than two characters (``Dr`` is not identifying)."""
    out: dict[str, None] = {}
    for n in names:
        for part in n.split("^"):
            if len(part) > 2 and part not in ("Dr. med.",):
                out[part] = None
    return list(out)


def patient_manifest(p: PatientSpec, files: list[Written]) -> dict[str, Any]:
    studies: list[dict[str, Any]] = []
    physicians: dict[str, None] = {}
    operators: dict[str, None] = {}
    institutions: dict[str, None] = {}
    inst_addresses: dict[str, None] = {}
    stations: dict[str, None] = {}
    serials: dict[str, None] = {}
    date_strings: dict[str, None] = {p.birth_date: None, us_date(p.birth_date): None}
    study_uids: list[str] = []
    series_uids: list[str] = []
    sop_uids: list[str] = []
    for_uids: list[str] = []
    for s in p.studies:
        institutions[s.institution.name] = None
        inst_addresses[s.institution.address] = None
        for pn in (s.referring, s.reading, s.requesting):
            physicians[pn] = None
        for d in (s.date, iso(s.date), us_date(s.date)):
            date_strings[d] = None
        study_uids.append(study_uid(s))
        series_list: list[dict[str, Any]] = []
        for se in s.series:
            physicians[se.performing] = None
            operators[se.operator] = None
            stations[se.device.station] = None
            serials[se.device.serial] = None
            series_uids.append(series_uid(s, se.number))
            modality = MODALITY[se.kind]
            if se.kind in (Kind.CT, Kind.CT_REFORMAT, Kind.MR):
                fuid = frame_of_reference_uid(s, modality)
                if fuid not in for_uids:
                    for_uids.append(fuid)
            se_files = [w for w in files if w.ctx.study is s and w.ctx.series is se]
            sop_uids.extend(w.ctx.sop_uid for w in se_files)
            series_list.append({
                "series_number": se.number,
                "series_instance_uid": series_uid(s, se.number),
                "modality": modality,
                "sop_class_uid": str(SOP_CLASS[se.kind]),
                "transfer_syntax": TS_NAME[se.ts],
                "transfer_syntax_uid": str(se.ts),
                "description": se.description,
                "burned_in_text": (
                    [p.ascii_upper, p.patient_id, iso(s.date)]
                    if se.kind in (Kind.US, Kind.SC) else []
                ),
                "files": [{"path": w.rel_path, "sop_instance_uid": w.ctx.sop_uid}
                          for w in se_files],
            })
        studies.append({
            "study_instance_uid": study_uid(s),
            "study_date": s.date,
            "study_time": s.time,
            "accession_number": s.accession,
            "study_id": s.study_id,
            "requested_procedure_id": s.requested_procedure_id,
            "scheduled_procedure_step_id": s.scheduled_step_id,
            "performed_procedure_step_id": s.performed_step_id,
            "description": s.description,
            "institution": s.institution.name,
            "folder": f"cohort/{p.folder}/{s.folder}",
            "series": series_list,
        })
    dates = [s.date for s in p.studies]
    intervals = [
        (dt.date.fromisoformat(iso(b)) - dt.date.fromisoformat(iso(a))).days
        for a, b in zip(dates, dates[1:])
    ]
    record: dict[str, Any] = {
        "patient_id": p.patient_id,
        "issuer_of_patient_id": p.issuer,
        "other_patient_ids": list(p.other_ids),
        "patient_name": p.name,
        "name_components": components([p.name]),
        "name_forms": name_forms(p),
        "specific_character_set": p.charset,
        "python_encoding": p.python_encoding,
        "birth_date": p.birth_date,
        "address": p.address,
        "phone_numbers": list(p.phones),
        "email": p.email,
        "folder": f"cohort/{p.folder}",
        "accession_numbers": [s.accession for s in p.studies],
        "study_ids": [s.study_id for s in p.studies],
        "procedure_ids": [x for s in p.studies for x in
                          (s.requested_procedure_id, s.scheduled_step_id, s.performed_step_id,
                           *(order_numbers(s) if _has_sr(s) else ()))],
        "institution_names": list(institutions),
        "institution_addresses": list(inst_addresses),
        "physician_names": list(physicians),
        "operator_names": list(operators),
        "person_name_components": components([*physicians, *operators]),
        "station_names": list(stations),
        "device_serial_numbers": list(serials),
        "study_dates": dates,
        "study_date_intervals_days": intervals,
        "date_strings": list(date_strings),
        "study_instance_uids": study_uids,
        "series_instance_uids": series_uids,
        "sop_instance_uids": sop_uids,
        "frame_of_reference_uids": for_uids,
        "studies": studies,
    }
    identifiers: dict[str, None] = {}
    for k in ("patient_id", "patient_name", "address", "email"):
        identifiers[str(record[k])] = None
    for k in ("other_patient_ids", "name_components", "name_forms", "phone_numbers",
              "accession_numbers", "study_ids", "procedure_ids", "institution_names",
              "institution_addresses", "physician_names", "operator_names",
              "person_name_components", "station_names", "device_serial_numbers",
              "study_instance_uids", "series_instance_uids", "sop_instance_uids",
              "frame_of_reference_uids"):
        for v in record[k]:
            identifiers[str(v)] = None
    record["identifiers"] = list(identifiers)
    return record


def write_manifest(out: Path, written: list[Written],
                   odd: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Write PLANTED_PHI.json; return each patient's flat identifier list."""
    patients = {
        p.patient_id: patient_manifest(p, [w for w in written if w.ctx.patient is p])
        for p in PATIENTS
    }
    manifest = {
        "description": "Every identifying value planted in the synthetic cohort. All values "
                       "are fictional. 'identifiers' is the flat list a de-identified output "
                       "must not contain (compare case-insensitively after decoding with "
                       "'python_encoding'); dates are listed separately in 'date_strings'.",
        "generator": "scripts/make_data_samples.py",
        "seed": SEED,
        "implementation_class_uid": IMPLEMENTATION_CLASS_UID,
        "private_tags": {
            "safe": {
                "creator": SAFE_PRIVATE_CREATOR,
                "source": "DICOM PS3.15 Table E.3.10-1",
                "elements": [
                    {"tag": "(0043,xx27)", "vr": SAFE_PITCH_RATIO[1], "value": SAFE_PITCH_RATIO[2],
                     "in": "GE CT series"},
                    {"tag": "(0043,xx39)", "vr": SAFE_B_VALUE[1],
                     "value": "\\".join(str(v) for v in SAFE_B_VALUE[2]), "in": "MR DWI series"},
                ],
            },
            "unsafe": {
                "creator": UNSAFE_PRIVATE_CREATOR,
                "elements": [
                    {"tag": "(0033,xx01)", "vr": "LO", "holds": "PatientID"},
                    {"tag": "(0033,xx02)", "vr": "LO", "holds": "PatientName"},
                    {"tag": "(0033,xx10)", "vr": "SQ",
                     "holds": "item with (0033,xx11) LO AccessionNumber and (0033,xx12) LO "
                              "RequestedProcedureID"},
                ],
                "in": "every image file (not SR)",
            },
        },
        "patients": patients,
        "odd_files": odd,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (out / "PLANTED_PHI.json").write_text(text, encoding="utf-8")
    return {pid: list(rec["identifiers"]) for pid, rec in patients.items()}


README = """\
# data-samples: a synthetic DICOM cohort with planted PHI

Everything in this folder is **synthetic**. It was generated by
`scripts/make_data_samples.py`; no real patient, clinician, institution or device
is represented. The protected health information (PHI) in these files is **fake and
planted on purpose**, in all the places a real archive hides it, so that tests can
check that dicomframe finds, reports and removes it.

## Regenerate

```
.venv/bin/python scripts/make_data_samples.py            # writes ./data-samples
.venv/bin/python scripts/make_data_samples.py --out /tmp/ds
```

The script is deterministic: a fixed seed (`{seed}`), UIDs `2.25.<int>` derived
from a SHA-256 of the seed and a per-object key, constant dates and times, and a
fixed File Meta implementation UID and version name. Running it twice gives
byte-identical files (the Deflated files depend on the zlib version, and
`odd/dicomdir/DICOMDIR` carries pydicom's own implementation version name). It
deletes and rewrites only `cohort/`, `odd/`, `PLANTED_PHI.json` and this
`README.md`, then re-reads every cohort file without `force`, checks File Meta,
pixel shapes and the size budget, and prints a summary.

## Contents

| path | what |
|---|---|
| `cohort/` | {files} valid DICOM Part 10 files: {patients} patients, {studies} studies, {series} series |
| `odd/` | problem inputs a scanner must report, not crash on |
| `PLANTED_PHI.json` | every planted identifying value, per patient |

### cohort/

Folder and file names leak PHI the way real exports do:
`cohort/<FAMILY>_<GIVEN>_<MRN>/<study folder>/<series folder>/<file>`. Study folders
are named by date, by accession number or with spaces; series folders by number, by
description or by SeriesInstanceUID; files `IM0001`, `IM0001.dcm`, `US_001.DCM` or
`<SOPInstanceUID>.dcm`.

{patient_table}

PHI is planted in: PatientName (multi-component), PatientID, IssuerOfPatientID,
OtherPatientIDs and OtherPatientIDsSequence, PatientBirthDate, PatientAge,
PatientAddress, PatientTelephoneNumbers, PatientTelecomInformation, AccessionNumber,
StudyID, InstitutionName/Address/DepartmentName, Referring/Performing/Reading/
Requesting physicians, PhysiciansOfRecord, OperatorsName, StationName,
DeviceSerialNumber, all dates and times, Study/Series descriptions (some contain the
patient name), ReasonForTheRequestedProcedure, ImageComments and
AdditionalPatientHistory (name, MRN, dates, phone), RequestAttributesSequence with
a nested ScheduledProtocolCodeSequence, ReferencedStudySequence,
ReferencedImageSequence and SourceImageSequence (UIDs of other cohort instances),
SR content (TEXT items with name and dates, PNAME items, DATE item,
VerifyingObserverSequence), burned-in pixel text (US and SC, `BurnedInAnnotation
YES`), and private tags:

* safe private block `GEMS_PARM_01` (DICOM PS3.15 Table E.3.10-1): `(0043,xx27)` SH
  on GE CT images, `(0043,xx39)` IS on the MR DWI series;
* unsafe private block `ACME_HOSPITAL_PRIVATE` on every image: `(0033,xx01)` LO
  PatientID, `(0033,xx02)` LO PatientName, `(0033,xx10)` SQ whose item holds the
  accession number and requested procedure ID. In Implicit VR files these read back
  as VR UN, as they would from a real archive.

Transfer syntaxes: Explicit VR Little Endian (most), Implicit VR Little Endian,
Deflated Explicit VR Little Endian (the Smith T2 series; its data set is
zlib-compressed, so its values cannot be found by searching raw file bytes) and
Explicit VR Big Endian (the Åström bone series; retired, but still found in
archives). Every file loads with `pydicom.dcmread(path)` without `force`, and its
File Meta SOP Class/Instance UIDs match the data set.

### odd/

| file | problem |
|---|---|
| `notes.txt` | not DICOM; plain text holding a fake name, MRN, phone and e-mail (`InvalidDicomError`) |
| `empty.dcm` | zero bytes (`InvalidDicomError`) |
| `truncated_header.dcm` | a valid file cut inside the AdditionalPatientHistory value: the declared length runs past end of file and everything after it, Pixel Data included, is missing. pydicom 3 reads it **without raising** (short last value) |
| `truncated_pixels.dcm` | header intact; the last half of the Pixel Data bytes is missing (declared length unchanged). `dcmread` succeeds, `pixel_array` raises `ValueError` |
| `no_file_meta.dcm` | a bare Implicit VR data set: no preamble, no `DICM`, no File Meta (`dcmread` raises `InvalidDicomError` unless `force=True`) |
| `dicomdir/` | a `DICOMDIR` file-set (written by `pydicom.fileset.FileSet`) over copies of two cohort instances of Doe^Jane^Marie |

## PLANTED_PHI.json

`patients` is keyed by the original PatientID. Each entry lists the name and its
components and textual forms, IDs, accession numbers, procedure IDs, birth date,
address, phones, e-mail, institutions, physician/operator names and their
components, station names, device serial numbers, study dates and the intervals
between them, every textual form of the dates, all Study/Series/SOP Instance and
Frame of Reference UIDs, a per-study/per-series breakdown with file paths and
burned-in text, and a flat `identifiers` list (everything except dates, which are in
`date_strings`). Strings are Unicode: decode file bytes with the patient's
`python_encoding` (`ascii`, `latin-1` or `utf-8`) before a case-insensitive search;
`bytes.lower()` does not fold `Ü` or `Å`. Name forms with `_` occur only in paths,
the ASCII upper-case form only as burned-in pixel text. The generator checks that no
identifier occurs by chance inside any Pixel Data, so whole output files can be
searched. Short components such as `Doe` are included on purpose. `odd_files`
describes the problem inputs.
"""


PATIENT_NOTES = {
    "P1": "CT, CT reformat (Implicit VR), Secondary Capture with burned-in name, Basic Text SR",
    "P2": "MR, Deflated Explicit VR series, DWI with safe private b-value, Implicit VR follow-up",
    "P3": "RGB US with burned-in name, US multi-frame (4 frames), Implicit VR follow-up",
    "P4": "CT, Explicit VR Big Endian series, MR",
    "P5": "MR, Implicit VR series, files named by SOPInstanceUID, Comprehensive SR, CT",
}


def patient_table() -> str:
    rows = ["| patient | character set | studies (days between) | content |",
            "|---|---|---|---|"]
    for p in PATIENTS:
        days = [(dt.date.fromisoformat(iso(b.date)) - dt.date.fromisoformat(iso(a.date))).days
                for a, b in zip(p.studies, p.studies[1:])]
        studies = ", ".join(f"{iso(s.date)} {s.description}" for s in p.studies)
        interval = f" ({', '.join(map(str, days))})" if days else ""
        charset = {None: "default", "ISO_IR 100": "ISO_IR 100 (Latin-1)",
                   "ISO_IR 192": "ISO_IR 192 (UTF-8)"}[p.charset]
        rows.append(f"| {p.name} | {charset} | {studies}{interval} | {PATIENT_NOTES[p.key]} |")
    return "\n".join(rows)


def write_readme(out: Path, written: list[Written]) -> None:
    studies = {w.ctx.study.key for w in written}
    series = {(w.ctx.study.key, w.ctx.series.number) for w in written}
    text = README.format(seed=SEED, files=len(written), patients=len(PATIENTS),
                         studies=len(studies), series=len(series),
                         patient_table=patient_table())
    (out / "README.md").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def verify(out: Path, written: list[Written], manifest: dict[str, list[str]]) -> None:
    """Re-read every cohort file without ``force`` and check File Meta and pixels.

    ``manifest`` maps PatientID to its planted identifiers; no identifier may occur by
    chance inside Pixel Data bytes, so tests can search whole output files for them.
    """
    on_disk = sorted(p.relative_to(out).as_posix()
                     for p in (out / "cohort").rglob("*") if p.is_file())
    expected = sorted(w.rel_path for w in written)
    if on_disk != expected:
        raise RuntimeError("cohort/ holds files the generator did not write")
    seen: set[str] = set()
    for w in written:
        path = out / w.rel_path
        raw = path.read_bytes()
        if raw[:128] != b"\x00" * 128 or raw[128:132] != b"DICM":
            raise RuntimeError(f"{w.ctx.key}: missing preamble or DICM prefix")
        ds = pydicom.dcmread(path)
        meta = ds.file_meta
        checks = {
            "MediaStorageSOPClassUID": meta.MediaStorageSOPClassUID == ds.SOPClassUID,
            "MediaStorageSOPInstanceUID": meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID,
            "TransferSyntaxUID": meta.TransferSyntaxUID == w.ctx.series.ts,
            "SOPInstanceUID": ds.SOPInstanceUID == w.ctx.sop_uid,
            "PatientName": str(ds.PatientName) == w.ctx.patient.name,
        }
        if "PixelData" in ds:
            arr = ds.pixel_array
            frames = int(ds.get("NumberOfFrames", 1))
            shape = (ds.Rows, ds.Columns) if ds.SamplesPerPixel == 1 else (
                ds.Rows, ds.Columns, ds.SamplesPerPixel)
            checks["pixels"] = arr.shape == ((frames, *shape) if frames > 1 else shape)
            codec = "utf-8" if w.ctx.patient.python_encoding == "utf-8" else "latin-1"
            pixels = bytes(ds.PixelData).decode(codec, errors="replace").lower()
            needles = manifest[w.ctx.patient.patient_id]
            checks["no identifier in pixel bytes"] = not any(
                n.lower() in pixels for n in needles)
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise RuntimeError(f"{w.ctx.key}: check failed: {', '.join(failed)}")
        if ds.SOPInstanceUID in seen:
            raise RuntimeError(f"{w.ctx.key}: duplicate SOPInstanceUID")
        seen.add(ds.SOPInstanceUID)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def generate(out: Path) -> dict[str, int]:
    """Delete and rewrite the owned entries of ``out``; return summary counts."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED_ENTRIES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    written = write_cohort(out)
    odd = write_odd(out, written)
    identifiers = write_manifest(out, written, odd)
    write_readme(out, written)
    verify(out, written, identifiers)
    total = folder_size(out)
    if total > MAX_TOTAL_BYTES:
        raise RuntimeError(f"{out} is {total} bytes, over the {MAX_TOTAL_BYTES} byte budget")
    return {
        "files": len(written),
        "cohort_bytes": folder_size(out / "cohort"),
        "odd_files": len(odd),
        "total_bytes": total,
        "patients": len(PATIENTS),
        "studies": len({w.ctx.study.key for w in written}),
        "series": len({(w.ctx.study.key, w.ctx.series.number) for w in written}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    default_out = Path(__file__).resolve().parent.parent / "data-samples"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=default_out,
                        help="output folder (default: data-samples next to scripts/)")
    args = parser.parse_args(argv)
    summary = generate(args.out)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
