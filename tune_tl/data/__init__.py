"""Image sources and one-time preparation (decode, split, resize) in the driver."""

from tune_tl.data.prepare import prepare, stratified_split
from tune_tl.data.sources import load_data, load_source
from tune_tl.data.types import BadImage, FileSplit, LabelledImages, LoadedData, PreparedData, Split

__all__ = [
    "BadImage",
    "FileSplit",
    "LabelledImages",
    "LoadedData",
    "PreparedData",
    "Split",
    "load_data",
    "load_source",
    "prepare",
    "stratified_split",
]
