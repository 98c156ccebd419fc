"""Print a short look at a scan written by `dicomframe scan -o FOLDER` (used by `make demo`)."""

from __future__ import annotations

import sys

import polars as pl


def main(folder: str) -> None:
    instances = pl.read_parquet(f"{folder}/instances.parquet")
    elements = pl.read_parquet(f"{folder}/elements.parquet")
    print(f"instances: {instances.height} rows x {instances.width} typed columns")
    print(f"elements:  {elements.height} rows (sequences flattened, max depth {elements['depth'].max()})")
    print()
    print("series per modality:")
    print(
        instances.group_by("Modality")
        .agg(pl.col("SeriesInstanceUID").n_unique().alias("series"), pl.len().alias("files"))
        .sort("Modality")
    )
    print()
    print("private creators found (name, elements):")
    print(
        elements.filter(pl.col("private_creator").is_not_null())
        .group_by("private_creator")
        .len()
        .sort("len", descending=True)
    )
    print()
    print("text fields most likely to hold free text (keyword, files):")
    print(
        elements.filter(pl.col("vr").is_in(["LO", "LT", "ST", "UT"]) & pl.col("keyword").is_not_null())
        .group_by("keyword")
        .agg(pl.col("file_id").n_unique().alias("files"))
        .sort("files", descending=True)
        .head(8)
    )


if __name__ == "__main__":
    main(sys.argv[1])
