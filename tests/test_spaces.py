"""HAWIS width space: Eq. 7-8 by hand, validation, WidthArch JSON, Eq. 6 state table."""

import numpy as np
import pytest
import torch

from cimnas.errors import CimnasError
from cimnas.nn.counting import LayerGeom
from cimnas.search.spaces import (
    STATE_DIM,
    LayerState,
    WidthArch,
    WidthSpace,
    build_states,
    episode_state,
    minmax_columns,
    validate_widths,
)

RESNET20_BASE = (16,) * 7 + (32,) * 6 + (64,) * 6


def test_ratio_eq7_and_channels_eq8_by_hand():
    sp = WidthSpace(base_widths=(16, 32), r_min=1.0, r_max=5.0, d=4)
    assert sp.ratio(0.0) == 1.0 and sp.ratio(1.0) == 5.0
    assert sp.ratio(0.25) == pytest.approx(2.0)
    assert sp.ratio(1.7) == 5.0 and sp.ratio(-0.2) == 1.0  # actions clipped to [0, 1]
    assert sp.channels(0.25, 16) == 32  # 16 * 2 / 4 = 8 -> 32
    assert sp.channels(0.3, 16) == 36  # r = 2.2: 35.2 / 4 = 8.8 -> 9 * 4
    assert sp.channels(1.0, 32) == 160
    assert sp.widths([0.25, 1.0]) == WidthArch((32, 160))


def test_round_half_up_and_at_least_d():
    sp = WidthSpace(base_widths=(10,), r_min=1.0, r_max=2.0, d=4)
    assert sp.channels(0.0, 10) == 12  # 10 / 4 = 2.5 rounds up (Python's round would give 8)
    tiny = WidthSpace(base_widths=(1,), r_min=1.0, r_max=2.0, d=8)
    assert tiny.channels(0.0, 1) == 8  # round(1/8) = 0 -> at least d


@pytest.mark.parametrize("kwargs,msg", [
    (dict(r_min=6.0, r_max=5.0), "r_max"),
    (dict(d=0), "granularity"),
    (dict(r_min=0.0), "r_min"),
    (dict(r_min=-1.0), "r_min"),
])
def test_bad_space_raises(kwargs, msg):
    with pytest.raises(CimnasError, match=msg):
        WidthSpace(base_widths=(16, 32), **kwargs)


def test_widths_need_one_action_per_layer():
    sp = WidthSpace(base_widths=RESNET20_BASE)
    assert sp.n_steps == 19
    with pytest.raises(CimnasError, match="19 actions"):
        sp.widths([0.5] * 18)


def test_min_max_uniform_widths():
    sp = WidthSpace(base_widths=RESNET20_BASE, r_min=1.0, r_max=5.0, d=4)
    assert sp.min_widths().widths == RESNET20_BASE
    assert sp.max_widths().widths == tuple(5 * c for c in RESNET20_BASE)
    assert sp.uniform_widths(4.0).widths == tuple(4 * c for c in RESNET20_BASE)
    assert sp.uniform_widths(9.0) == sp.max_widths()  # clipped to the space


def test_validate_widths_names_the_layer():
    sp = WidthSpace(base_widths=(16, 16, 32), d=4)
    assert validate_widths([16, 80, 64], sp) == WidthArch((16, 80, 64))
    with pytest.raises(CimnasError, match="layer 2 is 66, not a multiple of d=4"):
        validate_widths([16, 80, 66], sp)
    with pytest.raises(CimnasError, match="layer 1 is 84, outside"):
        validate_widths([16, 84, 64], sp)  # 16 x 5 = 80 is the most the super-net holds
    with pytest.raises(CimnasError, match="layer 0 is 12"):
        validate_widths([12, 16, 32], sp)
    with pytest.raises(CimnasError, match="3 searchable layers"):
        validate_widths([16, 16], sp)
    with pytest.raises(CimnasError, match="integer"):
        validate_widths([16, 16.0, 32], sp)


def test_action_for_inverts_eq8_on_every_valid_width():
    sp = WidthSpace(base_widths=(16, 24), r_min=1.0, r_max=5.0, d=4)
    for layer, base in enumerate(sp.base_widths):
        lo, hi = sp.min_widths().widths[layer], sp.max_widths().widths[layer]
        for w in range(lo, hi + 1, sp.d):
            assert sp.channels(sp.action_for(w, layer), base) == w


def test_samplers_are_seeded_and_valid():
    sp = WidthSpace(base_widths=RESNET20_BASE)
    a = sp.sample_nonuniform(torch.Generator().manual_seed(3))
    assert a == sp.sample_nonuniform(torch.Generator().manual_seed(3))
    assert a != sp.sample_nonuniform(torch.Generator().manual_seed(4))
    validate_widths(a.widths, sp)
    u = sp.sample_uniform(torch.Generator().manual_seed(4))
    ratios = {w / c for w, c in zip(u.widths, RESNET20_BASE, strict=True)}
    assert max(ratios) - min(ratios) <= 2 * sp.d / min(RESNET20_BASE)  # one ratio up to rounding
    m = sp.morph(a, torch.Generator().manual_seed(5), jitter=0.1)
    validate_widths(m.widths, sp)
    # jitter 0.1 moves the ratio by at most 0.4, i.e. 0.4 * c + d/2 rounding
    for w0, w1, c in zip(a.widths, m.widths, RESNET20_BASE, strict=True):
        assert abs(w1 - w0) <= 0.4 * c + sp.d
    assert m != a


def test_arch_and_space_serialise():
    arch = WidthArch((64, 80, 112))
    assert WidthArch.from_json(arch.to_json()) == arch
    assert WidthArch.from_dict({"widths": [64, 80, 112]}) == arch
    with pytest.raises(CimnasError):
        WidthArch.from_json("{not json")
    with pytest.raises(CimnasError):
        WidthArch.from_dict({"width": [1]})
    sp = WidthSpace(base_widths=(16, 32), r_min=1.5, r_max=4.0, d=8)
    assert WidthSpace.from_dict(sp.to_dict()) == sp


def test_minmax_columns_by_hand():
    t = minmax_columns(np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [2.0, 5.0, 10.0]]))
    np.testing.assert_allclose(t, [[0, 0, 0], [1, 0, 0.25], [0.5, 0, 1]])


def _geoms():
    return [
        LayerGeom("conv1", "conv", 3, 16, 3, 1, (32, 32), (32, 32), None, None),
        LayerGeom("l1.conv1", "conv", 16, 16, 3, 1, (32, 32), (32, 32), None, None),
        LayerGeom("l2.conv1", "conv", 16, 32, 3, 2, (32, 32), (16, 16), None, None),
        LayerGeom("l2.conv2", "conv", 32, 32, 3, 1, (16, 16), (16, 16), None, None),
    ]


def test_build_states_from_layergeoms_by_hand():
    table = build_states(_geoms(), block_indices=[0, 1, 2, 2])
    assert table.shape == (4, STATE_DIM)
    assert table.min() >= 0 and table.max() <= 1
    np.testing.assert_allclose(table[:, 0], [0, 1 / 3, 2 / 3, 1])  # layer index
    np.testing.assert_allclose(table[:, 1], [0, 0.5, 1, 1])  # block index
    np.testing.assert_allclose(table[:, 2], [0, 13 / 29, 13 / 29, 1])  # c_in 3, 16, 16, 32
    np.testing.assert_allclose(table[:, 4], 0)  # kernel constant -> 0
    np.testing.assert_allclose(table[:, 5], [0, 0, 1, 0])  # stride
    params = np.array([27 * 16, 144 * 16, 144 * 32, 288 * 32], float)
    np.testing.assert_allclose(table[:, 6], (params - params.min()) / np.ptp(params))
    np.testing.assert_allclose(table[:, 7], [1, 1, 1, 0])  # input fmap 1024, 1024, 1024, 256
    np.testing.assert_allclose(table[:, 8:], 0)  # dynamic columns filled during the episode


def test_build_states_from_layerstates_matches_geoms():
    layers = [LayerState.from_geom(g, i, b) for i, (g, b) in enumerate(zip(_geoms(), [0, 1, 2, 2], strict=True))]
    np.testing.assert_array_equal(build_states(layers), build_states(_geoms(), [0, 1, 2, 2]))
    with pytest.raises(CimnasError, match="block indices"):
        build_states(_geoms(), [0, 1])


def test_episode_state_fills_dynamic_columns():
    sp = WidthSpace(base_widths=(16, 16, 32, 32), r_min=1.0, r_max=5.0, d=4)
    table = build_states(_geoms(), [0, 1, 2, 2])
    s0 = episode_state(table, 0, 0.0, 0, sp)
    np.testing.assert_array_equal(s0, table[0])
    s2 = episode_state(table, 2, 0.25, 32, sp)
    # channels range over the space: 16 .. 160, so 32 -> 16 / 144
    assert s2[8] == 0.25 and s2[9] == pytest.approx(16 / 144)
    np.testing.assert_array_equal(s2[:8], table[2, :8])
    assert table[2, 8] == 0  # the table itself is not modified
    with pytest.raises(CimnasError):
        episode_state(table, 4, 0.0, 0, sp)


def test_one_rounding_function_for_eq8():
    import cimnas.nn.widths as widths
    from cimnas.search import spaces

    assert spaces.round_channels is widths.round_channels and spaces.WidthSpace is widths.WidthSpace
    assert [widths.round_channels(x, 4) for x in (10.0, 9.9, 13.9, 14.0, 1.0)] == [12, 8, 12, 16, 4]


def test_uniform_widths_unclipped_for_baselines_outside_the_space():
    sp = WidthSpace(base_widths=(16, 10), r_min=1.0, r_max=5.0, d=4)
    assert sp.uniform_widths(6.0, clip=False).widths == (96, 60)  # U-6x, beyond r_max
    assert sp.uniform_widths(6.0).widths == (80, 52)  # clipped to max_widths (10 x 5 = 50 -> 52)
    assert sp.uniform_widths(0.25, clip=False).widths == (4, 4)  # never below d
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(CimnasError, match="multiplier"):
            sp.uniform_widths(bad)


def test_morph_without_jitter_is_identity_and_sandwich_is_seeded():
    sp = WidthSpace(base_widths=RESNET20_BASE)
    a = sp.sample_nonuniform(torch.Generator().manual_seed(8))
    assert sp.morph(a, torch.Generator().manual_seed(9), jitter=0.0) == a
    s1 = sp.sandwich(torch.Generator().manual_seed(1), 3)
    assert s1 == sp.sandwich(torch.Generator().manual_seed(1), 3)
    assert s1[0] == sp.max_widths() and s1[1] == sp.min_widths() and len(s1) == 5
    # uniform B^1: the action is U(0, 1), so over many draws the widths cover the whole range
    g = torch.Generator().manual_seed(2)
    firsts = {sp.sample_uniform(g).widths[0] for _ in range(200)}
    assert min(firsts) == 16 and max(firsts) == 80
