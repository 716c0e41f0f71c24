"""``tune-tl predict MODEL PATH...``: classify image files (or every image under folders) with a saved model.

Images are preprocessed by the rule recorded in the model's ``model.json`` (``tune_tl.data.preprocess``,
the same code that prepared the training and validation data) and evaluated in the same batches as
validation, so predicting a trial's validation images reproduces its recorded accuracy.

    >>> rows = predict("results/demo/models/abc-best", ["photos/val"])     # doctest: +SKIP
    >>> write_predictions(rows, "predictions.csv")                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from tune_tl.analysis.ensemble_export import ensemble_members, is_ensemble
from tune_tl.analysis.model_folder import load_model_folder
from tune_tl.data.preprocess import load_rgb
from tune_tl.errors import TuneTLError
from tune_tl.models.folding import folded
from tune_tl.training.device import memory_format

COLUMNS = ("path", "label", "confidence")
#: The validation batch size (``FitConfig.eval_batch_size``): the same batches give the same numbers.
BATCH = 256
CPU = torch.device("cpu")


def image_files(paths: list[str | Path]) -> list[str]:
    """The files named, plus every image file under the folders named (recursively, hidden files left out, sorted)."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            for folder, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(str(Path(folder) / f) for f in sorted(files)
                           if not f.startswith(".") and Path(f).suffix.lower() in extensions)
        elif p.is_file():
            out.append(str(p))
        else:
            raise TuneTLError(f"{p}: no such file or folder")
    return out


@dataclass(frozen=True)
class Predictions:
    """What ``predict`` produced: one ``(path, label, confidence)`` row per readable image, and the files left
    out under ``skip_bad_images`` with the reason each could not be read."""

    rows: list[tuple[str, str, float]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict(model_path: str | Path, paths: list[str | Path], skip_bad_images: bool = False) -> list[tuple[str, str, float]]:
    """``(path, label, confidence)`` for each image file named or found under the folders named
    (:func:`predict_files`'s rows; with ``skip_bad_images`` the unreadable ones are left out)."""
    return predict_files(model_path, paths, skip_bad_images).rows


@torch.no_grad()
def predict_files(model_path: str | Path, paths: list[str | Path], skip_bad_images: bool = False) -> Predictions:
    """Classify each image file named or found under the folders named; ``model_path`` may be an exported ensemble
    (``analysis.ensemble_export``): the weighted average of its members' probabilities.

    Raises:
        TuneTLError: A model-folder problem; or (without ``skip_bad_images``) the first image that cannot be read,
            a decompression bomb included, as one line naming the file.
    """
    if is_ensemble(model_path):
        info, members = ensemble_members(model_path)
        models = [(load_model_folder(folder), weight) for folder, weight in members]
    else:
        model, info, pre = load_model_folder(model_path)
        models = [((model, info, pre), 1.0)]
    files = image_files(paths)
    rows: list[tuple[str, str, float]] = []
    skipped: list[tuple[str, str]] = []
    fast: dict[int, torch.nn.Module] = {}
    for start in range(0, len(files), BATCH):
        chunk, images = [], []
        for f in files[start : start + BATCH]:
            image = _decode(f)
            if isinstance(image, str):
                if not skip_bad_images:
                    raise TuneTLError(f"{f}: {image}; pass --skip-bad-images to predict the other images")
                skipped.append((f, image))
                continue
            chunk.append(f)
            images.append(image)
        if not images:
            continue
        probs = 0
        for i, ((model, _, pre), weight) in enumerate(models):
            x = pre.batch(images).contiguous(memory_format=memory_format(CPU))  # channels_last, as the trials ran
            if i not in fast:  # batch norm folded into its convolution (models.folding): the same outputs, sooner
                fast[i] = folded(model, x[:2])
            probs = probs + weight * torch.softmax(fast[i](x).float(), dim=1)
        p, idx = probs.max(dim=1)
        rows.extend((f, info["classes"][int(i)], float(q)) for f, i, q in zip(chunk, idx, p, strict=True))
    return Predictions(rows, skipped)


def _decode(path: str) -> Image.Image | str:
    """The image as RGB, or why it cannot be read. An image over Pillow's pixel limit (``MAX_IMAGE_PIXELS``, where it
    only warns, and twice that, where it refuses) counts as a decompression bomb: a small file that would decode into
    gigabytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"refused as a possible decompression bomb ({exc})"
    except UnidentifiedImageError:
        return "not an image file Pillow can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({exc})"


def write_skipped(skipped: list[tuple[str, str]], output: str | Path) -> Path:
    """The companion of ``--output FILE``: ``FILE.skipped.txt``, one ``path<TAB>reason`` line per image left out."""
    companion = Path(f"{output}.skipped.txt")
    companion.write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped), encoding="utf-8")
    return companion


def write_predictions(rows: list[tuple[str, str, float]], output: str | Path) -> Path:
    """Write ``rows`` to ``output``: ``.csv`` or ``.parquet`` (columns ``path``, ``label``, ``confidence``)."""
    import pandas as pd

    output = Path(output)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if output.suffix == ".csv":
        frame.to_csv(output, index=False)
    elif output.suffix == ".parquet":
        frame.to_parquet(output, index=False)
    else:
        raise TuneTLError(f"--output {output}: give a .csv or .parquet file name")
    return output
