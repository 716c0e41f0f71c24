"""``tune-tl predict MODEL PATH...``: classify image files (or every image under folders) with a saved model.

Images are preprocessed by the rule recorded in the model's ``model.json`` (``tune_tl.data.preprocess``,
the same code that prepared the training and validation data) and evaluated in the same batches as
validation, so predicting a trial's validation images reproduces its recorded accuracy.

    >>> rows = predict("results/demo/models/abc-best", ["photos/val"])     # doctest: +SKIP
    >>> write_predictions(rows, "predictions.csv")                        # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from tune_tl.analysis.ensemble_export import ensemble_members, is_ensemble
from tune_tl.analysis.model_folder import load_model_folder
from tune_tl.data.preprocess import load_rgb
from tune_tl.errors import TuneTLError

COLUMNS = ("path", "label", "confidence")
#: The validation batch size (``FitConfig.eval_batch_size``): the same batches give the same numbers.
BATCH = 256


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


@torch.no_grad()
def predict(model_path: str | Path, paths: list[str | Path]) -> list[tuple[str, str, float]]:
    """``(path, label, confidence)`` for each image file named or found under the folders named; ``model_path`` may be
    an exported ensemble (``analysis.ensemble_export``): the weighted average of its members' probabilities."""
    if is_ensemble(model_path):
        info, members = ensemble_members(model_path)
        models = [(load_model_folder(folder), weight) for folder, weight in members]
    else:
        model, info, pre = load_model_folder(model_path)
        models = [((model, info, pre), 1.0)]
    files = image_files(paths)
    rows: list[tuple[str, str, float]] = []
    for start in range(0, len(files), BATCH):
        chunk = files[start : start + BATCH]
        images = []
        for f in chunk:
            try:
                images.append(load_rgb(f))
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
                raise TuneTLError(f"{f}: not a readable image ({exc})") from None
        probs = sum(weight * torch.softmax(model(pre.batch(images)).float(), dim=1) for (model, _, pre), weight in models)
        p, idx = probs.max(dim=1)
        rows.extend((f, info["classes"][int(i)], float(q)) for f, i, q in zip(chunk, idx, p, strict=True))
    return rows


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
