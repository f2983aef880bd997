"""The selftest judge: CONFIG checked at once, checks that back a RESULT|PASS (pure, no VM needed)."""

from harness.console import Console
from harness.judge import SelftestJudge, config_mismatch
from harness.lines import Line
from harness.markers import parse
from harness.verdict import Verdict

CONFIG = ("AERO_VIRTIO_SELFTEST|CONFIG|http_url=http://10.0.2.2:18080/aero-virtio-selftest|"
          "http_url_large=http://10.0.2.2:18080/aero-virtio-selftest-large|udp_port=18081|dns_host=host.lan")


def test_config_that_matches_the_host_is_fine():
    assert config_mismatch(parse(CONFIG), 18080, "/aero-virtio-selftest", 18081) is None


def test_udp_port_mismatch_names_both_fixes():
    verdict = config_mismatch(parse(CONFIG), 18080, "/aero-virtio-selftest", 19000)
    assert verdict.token == "UDP_PORT_MISMATCH"
    assert "--udp-port 18081" in verdict.detail and "provision" in verdict.detail
    assert config_mismatch(parse(CONFIG), 18080, "/aero-virtio-selftest", None) is None  # --disable-udp


def test_http_url_mismatch():
    verdict = config_mismatch(parse(CONFIG), 28080, "/aero-virtio-selftest", 18081)
    assert verdict.token == "HTTP_URL_MISMATCH" and "--http-port 18080" in verdict.detail
    assert config_mismatch(parse(CONFIG), 18080, "/other", 18081).token == "HTTP_URL_MISMATCH"


def feed(judge, *lines):
    verdict = None
    for text in lines:
        verdict = verdict or judge.on_line(Line(text), parse(text), None)
    return verdict


def test_a_config_mismatch_ends_the_run_before_any_test():
    judge = SelftestJudge(("virtio-blk",), Console(live=False),
                          lambda m: config_mismatch(m, 18080, "/aero-virtio-selftest", 19000))
    verdict = feed(judge, "AERO_VIRTIO_SELFTEST|START|version=1", CONFIG)
    assert verdict.token == "UDP_PORT_MISMATCH"


def test_checks_at_pass_can_turn_a_pass_into_a_failure():
    failing = Verdict(1, "IRQ_MODE_MISMATCH", "virtio-blk expected=intx got=msi")
    judge = SelftestJudge(("virtio-blk",), Console(live=False), checks_at_pass=[lambda t: None, lambda t: failing])
    verdict = feed(judge, "AERO_VIRTIO_SELFTEST|START|version=1", "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS",
                   "AERO_VIRTIO_SELFTEST|RESULT|PASS")
    assert verdict == failing
