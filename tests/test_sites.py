"""firmware_bridge may not import runtime, so it spells site and age-group names itself: they must agree."""

import pytest

from firmware_bridge import heart, protocol
from runtime.records import AGE_GROUPS
from runtime.sites import SITES, site_index


def test_site_names_agree_across_the_wire_the_heart_model_and_the_patient_tensor():
    assert protocol.SITE_CODES == heart.SITES == SITES


def test_age_groups_agree_between_heart_model_and_records():
    assert heart.AGE_GROUPS == AGE_GROUPS


def test_unknown_site_names_the_valid_ones():
    assert site_index("Phc") == 4
    with pytest.raises(ValueError, match="expected one of AV, PV, TV, MV, Phc"):
        site_index("LV")
