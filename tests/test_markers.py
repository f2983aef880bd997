import pytest

from harness.markers import parse

# The lines of docs/guest-contract.md, verbatim.
PROTOCOL_LINES = """\
AERO_VIRTIO_SELFTEST|START|version=1
AERO_VIRTIO_SELFTEST|CONFIG|http_url=http://10.0.2.2:18080/aero-virtio-selftest|http_url_large=http://10.0.2.2:18080/aero-virtio-selftest-large|udp_port=18081|dns_host=host.lan|blk_root=|expect_blk_msi=0|require_net_msix=0|require_input_msix=0|require_snd_msix=0|test_net_link_flap=0
AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_ok=1|write_bytes=33554432|flush_ok=1|read_ok=1|read_bytes=33554432
virtio-blk-irq|INFO|mode=msi|messages=2
AERO_VIRTIO_SELFTEST|TEST|virtio-blk-resize|SKIP|flag_not_set
AERO_VIRTIO_SELFTEST|TEST|virtio-blk-reset|SKIP|reason=flag_not_set
AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|READY
AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|large_ok=1|large_bytes=1048576|large_fnv1a64=0x8505ae4435522325|upload_ok=1|upload_bytes=1048576
AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=http_get_failed
AERO_VIRTIO_SELFTEST|RESULT|PASS
AERO_VIRTIO_SELFTEST|RESULT|FAIL""".splitlines()


def test_every_protocol_line_parses():
    markers = [parse(line) for line in PROTOCOL_LINES]
    assert all(m is not None for m in markers)
    kinds = [m.kind for m in markers]
    assert kinds == ["START", "CONFIG", "TEST", "DIAG", "TEST", "TEST", "TEST", "TEST", "TEST", "RESULT", "RESULT"]


def test_test_line_fields_and_tokens():
    blk = parse(PROTOCOL_LINES[2])
    assert (blk.name, blk.status) == ("virtio-blk", "PASS")
    assert blk.get("write_bytes") == "33554432"
    resize = parse(PROTOCOL_LINES[4])
    assert resize.tokens == ("flag_not_set",) and resize.reason == "flag_not_set"
    reset = parse(PROTOCOL_LINES[5])
    assert reset.reason == "flag_not_set" and reset.tokens == ()
    assert parse(PROTOCOL_LINES[6]).status == "READY"
    assert parse(PROTOCOL_LINES[8]).reason == "http_get_failed"


def test_config_keeps_empty_values():
    config = parse(PROTOCOL_LINES[1])
    assert config.get("blk_root") == ""
    assert config.get("udp_port") == "18081"


def test_diagnostic_line():
    diag = parse(PROTOCOL_LINES[3])
    assert (diag.kind, diag.name, diag.get("mode")) == ("DIAG", "virtio-blk-irq", "msi")


def test_unknown_test_names_are_accepted():
    m = parse("AERO_VIRTIO_SELFTEST|TEST|virtio-gpu-future|PASS|x=1")
    assert m.name == "virtio-gpu-future"


@pytest.mark.parametrize(
    "line",
    [
        "noise AERO_VIRTIO_SELFTEST|RESULT|PASS",
        "AERO_VIRTIO_SELFTEST|BOGUS|x",
        "AERO_VIRTIO_SELFTEST|TEST|",
        "AERO_VIRTIO_SELFTEST|TEST|virtio-blk",
        "AERO_VIRTIO_SELFTEST|RESULT",
        "AERO_VIRTIO_SELFTEST",
        "",
        "[    3.1] kernel says virtio-blk-irq|INFO|x",
    ],
)
def test_noise_is_not_a_marker(line):
    assert parse(line) is None


def test_result_status_is_normalised():
    assert parse("AERO_VIRTIO_SELFTEST|RESULT|pass ").status == "PASS"


def test_leading_whitespace_before_the_prefix_is_allowed_but_not_text():
    assert parse("  \tAERO_VIRTIO_SELFTEST|RESULT|PASS").status == "PASS"
    assert parse("x AERO_VIRTIO_SELFTEST|RESULT|PASS") is None
