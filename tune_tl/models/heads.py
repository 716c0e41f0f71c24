"""Classifier heads that sit on a backbone's pooled features.

    >>> head = build_head("mlp", in_features=1280, num_classes=10, hidden=256, dropout=0.2)
    >>> head(torch.zeros(4, 1280)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

from torch import nn

from tune_tl.errors import TuneTLError

HEAD_KINDS = ("linear", "mlp")


def build_head(kind: str, in_features: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """A fresh, randomly initialised head.

    Args:
        kind: ``linear`` (one Linear, with Dropout before it when ``dropout > 0``) or ``mlp``
            (Linear -> ReLU -> Dropout -> Linear).
        in_features: Width of the backbone's pooled features.
        num_classes: Number of output logits.
        hidden: Width of the mlp's hidden layer; ignored by ``linear`` so a search space can sample it
            for every trial.
        dropout: Drop probability in [0, 1).

    Raises:
        TuneTLError: Unknown ``kind`` (key ``head``), a missing or non-positive ``hidden`` for ``mlp``
            (key ``head_hidden``), or ``dropout`` outside [0, 1) (key ``head_dropout``).
    """
    if not 0.0 <= dropout < 1.0:
        raise TuneTLError(f"head_dropout must be in [0, 1), got {dropout}")
    if kind == "linear":
        linear = nn.Linear(in_features, num_classes)
        return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear
    if kind == "mlp":
        if hidden is None or isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise TuneTLError(f"head_hidden must be a positive integer for head 'mlp', got {hidden!r}; set head_hidden in the search space")
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise TuneTLError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
