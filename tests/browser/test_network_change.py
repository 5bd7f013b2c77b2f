"""A network change without a rejoin: the address two pages' media uses disappears and another
appears (in a network namespace of the test's own, see tests/browser/netcut.py); the pages
restart ICE and carry on over the new one. The time until media flows again is printed; its
size is not asserted."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.browser.netcut import run_in_namespace
from tests.support.deps import missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_media_flows_again_after_the_path_is_cut() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing("cutting a network path needs root and iproute2 (ip netns)")
    result = run_in_namespace()
    print(f"\nmedia flowing again {result['recovered_s']} s after the cut; "
          f"ICE restarted: {result['ice_restarted']}; "
          f"{result['pair_before']['localAddress']} -> {result['pair_after']['localAddress']}")
    assert result["page_errors"] == []
    assert result["pair_after"]["localAddress"] != result["cut"]
    assert result["ice_restarted"], result
