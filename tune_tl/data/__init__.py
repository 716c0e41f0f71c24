"""Image sources and one-time preparation (decode, split, resize) in the driver."""

from tune_tl.data.prepare import prepare, stratified_split
from tune_tl.data.sources import load_source
from tune_tl.data.types import LabelledImages, PreparedData, Split

__all__ = ["LabelledImages", "PreparedData", "Split", "load_source", "prepare", "stratified_split"]
