import shlex

from harness.devices import DeviceSet, attach
from harness.qemu_argv import QemuSpec, build_argv, hmp_string, keyval, shell_line, wavcapture_command


def spec(**kw):
    base = dict(qemu="qemu-system-x86_64", disk="/d/win7.qcow2", disk_format="qcow2",
                serial_log="/a/serial.log", qmp_socket="/t/qmp.sock")
    base.update(kw)
    return QemuSpec(**base)


def value_after(argv, flag, startswith):
    for i, arg in enumerate(argv):
        if arg == flag and argv[i + 1].startswith(startswith):
            return argv[i + 1]
    raise AssertionError(f"no {flag} {startswith}...")


def test_keyval_doubles_commas_and_adds_no_quotes():
    assert keyval("/a,b/c d.qcow2") == "/a,,b/c d.qcow2"


def test_paths_with_commas_and_spaces():
    argv = build_argv(spec(disk="/my disks/a,b.qcow2", serial_log="/x,y/serial.log"))
    assert value_after(argv, "-drive", "file=") .startswith("file=/my disks/a,,b.qcow2,if=none")
    assert value_after(argv, "-chardev", "file,") == "file,id=com1,path=/x,,y/serial.log"
    assert '"' not in " ".join(argv) and "'" not in " ".join(argv)


def test_devices_and_defaults():
    argv = build_argv(spec())
    assert argv[0] == "qemu-system-x86_64"
    assert "virtio-blk-pci,drive=drive0,bootindex=0,id=aero_virtio_blk0,disable-legacy=on" in argv
    assert "virtio-net-pci,netdev=net0,id=aero_virtio_net0,disable-legacy=on" in argv
    assert value_after(argv, "-drive", "file=").split(",")[1:3] == ["if=none", "id=drive0"]
    assert value_after(argv, "-netdev", "user") == "user,id=net0"
    assert "-no-reboot" in argv and "-S" in argv
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-m") + 1] == "2048"


def test_tcg_threads_are_asked_for_under_tcg_only():
    multi = build_argv(spec(tcg_thread="multi"))
    assert multi[multi.index("-accel") + 1] == "tcg,thread=multi"
    kvm = build_argv(spec(accel="kvm", tcg_thread="multi"))
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_options_flow_through():
    argv = build_argv(spec(accel="kvm", memory_mib=4096, smp=4, paused=False, panic_pause=True,
                           fw_cfg=(("opt/aero/http_url", "http://10.0.2.2:1/p,q"),), extra=("-cpu", "host")))
    assert "-S" not in argv
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-smp") + 1] == "4"
    assert argv[argv.index("-action") + 1] == "panic=pause"
    assert "name=opt/aero/http_url,string=http://10.0.2.2:1/p,,q" in argv
    assert argv[-2:] == ["-cpu", "host"]


def test_shell_line_round_trips():
    argv = build_argv(spec(disk="/my disks/it's.qcow2"))
    assert shlex.split(shell_line(argv)) == argv


def test_install_media_boot_first_and_reboots_are_allowed():
    argv = build_argv(spec(cdroms=("/isos/win 7,sp1.iso", "/b/provision.iso"), boot_cdrom=True, no_reboot=False,
                           devices=tuple(attach(DeviceSet(disk_bootindex=1), {}))))
    assert "-no-reboot" not in argv
    assert value_after(argv, "-device", "virtio-blk-pci").startswith("virtio-blk-pci,drive=drive0,bootindex=1,")
    assert "file=/isos/win 7,,sp1.iso,if=none,id=cd0,media=cdrom,readonly=on" in argv
    assert "ide-cd,drive=cd0,bootindex=0" in argv and "ide-cd,drive=cd1" in argv


def test_the_disk_cache_mode():
    """A kept image is written back as the guest flushes; the run's throw-away overlay ignores flushes."""
    assert value_after(build_argv(spec()), "-drive", "file=").endswith(",cache=writeback")
    assert value_after(build_argv(spec(disk_cache="unsafe")), "-drive", "file=").endswith(",cache=unsafe")


def test_a_run_of_a_repeat_offers_its_number_through_fw_cfg():
    from harness.config import SelftestConfig
    from harness.runner import fw_cfg_hints

    assert [k for k, _ in fw_cfg_hints(SelftestConfig())] == ["opt/aero/http_url", "opt/aero/udp_port"]
    assert ("opt/aero/run_index", "7") in fw_cfg_hints(SelftestConfig(run_index=7))


def test_sound_uses_the_none_backend_and_records_with_wavcapture():
    # wav has no capture side: QEMU would give virtio-sound's input stream no voice. The recording
    # is started over QMP (wavcapture), so the command line names no WAV file.
    sound = tuple(attach(DeviceSet(sound=True), {}))
    argv = build_argv(spec(devices=sound))
    assert value_after(argv, "-audiodev", "") == "none,id=snd0"
    assert ".wav" not in " ".join(argv)
    assert "-audiodev" not in build_argv(spec())
    assert wavcapture_command("/a b/x.wav") == 'wavcapture "/a b/x.wav" snd0 48000 16 2'


def test_hmp_string_quotes_and_escapes():
    assert hmp_string('/a "b"\\c') == '"/a \\"b\\"\\\\c"'
    assert shlex.split(hmp_string('/a "b"\\c')) == ['/a "b"\\c']
