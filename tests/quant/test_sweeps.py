"""The registry of PTQ sweep axes: every option names a registered sweep, and each sweep's points follow its
options."""

from __future__ import annotations

from calohls.config import SWEEPS as OPTION_SWEEPS
from calohls.config import PTQConfig
from calohls.quant.sweeps import SWEEPS


def test_the_options_offer_exactly_the_registered_sweeps():
    assert tuple(SWEEPS) == OPTION_SWEEPS
    assert PTQConfig().sweeps == tuple(SWEEPS)


def test_points_and_legends_follow_the_options():
    config = PTQConfig(total_bits=12, int_bits=(4, 6), integer_bits=5, total_bits_range=(8, 9), weight_bits=(4, 5))
    assert [p.label for p in SWEEPS["int-bits"].points(config, ["phi_1"])] == [
        "ap_fixed<12,4>",
        "ap_fixed<12,5>",
        "ap_fixed<12,6>",
    ]
    assert [p.value for p in SWEEPS["total-bits"].points(config, ["phi_1"])] == [8, 9]
    weights = SWEEPS["weights"].points(config, ["phi_1", "f_1"])
    assert [p.default for p in weights] == [config.data_precision] * 2
    assert weights[0].layers["f_1"]["weight"] == "ap_fixed<4,3>"
    assert [SWEEPS[k].fixed(config) for k in SWEEPS] == ["ap_fixed<12,I>", "ap_fixed<W,5>", "data ap_fixed<32,14>"]
    assert [k for k, s in SWEEPS.items() if s.integer_bits] == ["int-bits"]
