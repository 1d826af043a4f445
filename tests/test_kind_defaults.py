"""What a setting kind refuses without being told: the base class's defaults (a new kind is one
class and inherits them) and the GPU application-clock pair, read from profiles and from NVML."""

from __future__ import annotations

import pytest

from gpunode.tune.kinds.base import SettingKind
from gpunode.tune.kinds.gpu import clock_pair_text
from gpunode.tune.kinds.values import SettingInvalid


def test_a_new_kind_refuses_a_key_on_two_lines_by_default():
    class Plain(SettingKind):
        name = "plain"

    Plain().validate_key("vm.swappiness")
    with pytest.raises(SettingInvalid, match="control character"):
        Plain().validate_key("vm.swappiness\n")


@pytest.mark.parametrize(("given", "pair"), [
    ("2619,1980", "2619,1980"), (" 2619 , 1980 ", "2619,1980"), ((2619, 1980), "2619,1980"),
    ("2619,0", None), ("0,1980", None), ("-1,1980", None),  # a clock of 0 or below is no clock
    ("2619,1980,1", None), ("2619", None), ("x,1980", None), ((None, 1980), None),
])
def test_an_application_clock_pair_is_two_positive_clocks(given, pair):
    assert (clock_pair_text(*given) if isinstance(given, tuple) else clock_pair_text(given)) == pair
