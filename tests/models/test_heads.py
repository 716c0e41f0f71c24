import pytest
import torch
from torch import nn

from tune_tl.errors import TuneTLError
from tune_tl.models import build_head


def test_linear_head_maps_features_to_one_logit_per_class():
    head = build_head("linear", 16, 5)
    assert isinstance(head, nn.Linear)
    assert head(torch.zeros(3, 16)).shape == (3, 5)


def test_linear_head_with_dropout_drops_before_the_linear_layer():
    head = build_head("linear", 16, 5, dropout=0.3)
    assert [type(m) for m in head] == [nn.Dropout, nn.Linear]
    assert head[0].p == 0.3
    assert head(torch.zeros(3, 16)).shape == (3, 5)


def test_mlp_head_has_a_hidden_layer_of_the_requested_width():
    head = build_head("mlp", 16, 5, hidden=32, dropout=0.1)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 5)]
    assert any(isinstance(m, nn.ReLU) for m in head) and any(isinstance(m, nn.Dropout) for m in head)
    assert head(torch.zeros(3, 16)).shape == (3, 5)


def test_linear_head_ignores_a_sampled_hidden_width():
    assert isinstance(build_head("linear", 16, 5, hidden=64), nn.Linear)


def test_unknown_head_kind_is_rejected_naming_head_and_the_choices():
    with pytest.raises(TuneTLError, match=r"head 'conv'.*linear, mlp"):
        build_head("conv", 16, 5)


@pytest.mark.parametrize("hidden", [None, 0, 2.5, True])
def test_mlp_head_without_a_positive_integer_hidden_width_is_rejected_naming_head_hidden(hidden):
    with pytest.raises(TuneTLError, match="head_hidden"):
        build_head("mlp", 16, 5, hidden=hidden)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_outside_zero_to_one_is_rejected_naming_head_dropout(dropout):
    with pytest.raises(TuneTLError, match="head_dropout"):
        build_head("linear", 16, 5, dropout=dropout)
