/*
 * aero-guest-tool: what the test guest needs beyond busybox, one subcommand each.
 * Built with gcc -static when the test guest is built; init calls it.
 *
 *   aero-guest-tool udp-echo HOST PORT SIZE...
 *   aero-guest-tool evdev input-events KEYBOARD MOUSE [modifiers] [buttons] [wheel]
 *   aero-guest-tool evdev input-media-keys KEYBOARD
 *   aero-guest-tool evdev input-tablet-events TABLET
 *   aero-guest-tool snd play PCM SECONDS tone|silence
 *   aero-guest-tool snd capture PCM SECONDS
 *   aero-guest-tool snd duplex PLAYBACK_PCM CAPTURE_PCM SECONDS tone|silence
 *
 * udp-echo sends one datagram of each SIZE (bytes 0, 1, 2, ... 255, 0, ...) to
 * HOST:PORT and waits up to 2 s for it to come back unchanged, as the Windows
 * selftest does with 32 and 1400 bytes. It prints one line,
 * "<bytes of the last datagram tried> <reason>", reason "-" when every size
 * came back, and exits 0 then, 1 on a failed echo, 2 on a usage error.
 *
 * evdev plays one of the Windows selftest's input tests that wait for the host
 * (READY) on Linux's evdev nodes (/dev/input/eventN; "-" for a device the guest
 * does not have). It opens the devices, prints the test's READY marker, counts
 * what the host's QMP input-send-event produces until the test is satisfied or
 * its timeout (the real guest's: 10 s, 15 s with a sub-test; a tablet or media
 * key test 10 s), and prints the test's PASS/FAIL/SKIP markers in the real
 * guest's formats. A "report" is one evdev packet (events up to SYN_REPORT); a
 * bad report is one the kernel dropped (SYN_DROPPED). Marker lines end in CRLF,
 * one write each, on stdout (init points it at COM1). Exit 0 when the test and
 * every requested sub-test passed (or a tablet test was skipped for want of a
 * tablet), 1 when not, 2 on a usage error.
 *
 * snd plays and records through an ALSA PCM device node (/dev/snd/pcmC0D0p,
 * ...c) with the kernel's own ioctls, as busybox has no aplay: 48 kHz, 16-bit,
 * stereo, interleaved. play writes SECONDS of a 440 Hz tone at about a third
 * of full scale (or of zeros: "silence") and drains it; capture reads SECONDS
 * of frames; duplex does both at once on two devices. It prints one line of
 * marker fields ("frames=48000|..."; with "reason=..." when it failed) and
 * exits 0 when every frame went through, 1 when not, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <netinet/in.h>
#include <poll.h>
#include <sound/asound.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_DATAGRAM 65507

static int usage(void)
{
    fprintf(stderr,
            "usage: aero-guest-tool udp-echo HOST PORT SIZE...\n"
            "       aero-guest-tool evdev input-events KEYBOARD MOUSE [modifiers] [buttons] [wheel]\n"
            "       aero-guest-tool evdev input-media-keys KEYBOARD\n"
            "       aero-guest-tool evdev input-tablet-events TABLET\n"
            "       aero-guest-tool snd play PCM SECONDS tone|silence\n"
            "       aero-guest-tool snd capture PCM SECONDS\n"
            "       aero-guest-tool snd duplex PLAYBACK_PCM CAPTURE_PCM SECONDS tone|silence\n");
    return 2;
}

static int udp_result(int bytes, const char *reason)
{
    printf("%d %s\n", bytes, reason);
    return strcmp(reason, "-") == 0 ? 0 : 1;
}

/* One round trip of `len` bytes on a connected socket; NULL when it came back. */
static const char *udp_round_trip(int fd, size_t len)
{
    static unsigned char sent[MAX_DATAGRAM], got[MAX_DATAGRAM + 16];
    for (size_t i = 0; i < len; i++)
        sent[i] = (unsigned char)(i & 0xff);
    ssize_t n = send(fd, sent, len, 0);
    if (n < 0)
        return "send_failed";
    if ((size_t)n != len)
        return "short_send";
    /* A larger buffer than sent, so a longer answer shows as a wrong length. */
    n = recv(fd, got, sizeof(got), 0);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? "timeout" : "recv_failed";
    if ((size_t)n != len)
        return "unexpected_len";
    if (memcmp(sent, got, len) != 0)
        return "mismatch";
    return NULL;
}

static int udp_echo(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    struct sockaddr_in dst = {.sin_family = AF_INET};
    int port = atoi(argv[1]);
    if (inet_pton(AF_INET, argv[0], &dst.sin_addr) != 1 || port <= 0 || port > 65535)
        return usage();
    dst.sin_port = htons((unsigned short)port);
    for (int i = 2; i < argc; i++)
        if (atoi(argv[i]) <= 0 || atoi(argv[i]) > MAX_DATAGRAM)
            return usage();

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return udp_result(0, "socket_failed");
    struct timeval timeout = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0)
        return udp_result(0, "connect_failed");

    int bytes = 0;
    for (int i = 2; i < argc; i++) {
        bytes = atoi(argv[i]);
        const char *failed = udp_round_trip(fd, (size_t)bytes);
        if (failed)
            return udp_result(bytes, failed);
    }
    close(fd);
    return udp_result(bytes, "-");
}

/* --- evdev ------------------------------------------------------------- */

/* The err= values of the real guest's FAIL lines are Windows error codes; this
 * guest gives the same code for the same reason, and errno where only Linux
 * can fail (opening or reading a device). */
#define ERR_NOT_FOUND 1168  /* ERROR_NOT_FOUND */
#define ERR_TIMEOUT 1460    /* ERROR_TIMEOUT */

/* What the host harness sends (PROTOCOL.md, "Host actions the guest waits for"). */
#define WHEEL_DELTA 1
#define HWHEEL_DELTA (-2)
#define TABLET_X 10000
#define TABLET_Y 20000
#define QMP_ABS_MAX 32767

/* One marker line, CRLF-terminated, in one write. */
static void marker(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(buf) - 3)
        n = (int)sizeof(buf) - 3;
    buf[n++] = '\r';
    buf[n++] = '\n';
    if (write(STDOUT_FILENO, buf, (size_t)n) < 0)
        return;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct evdev {
    const char *kind; /* keyboard, mouse, consumer, tablet: names the reasons */
    int fd;
    int reports;
    int bad_reports;
    int dropping; /* after SYN_DROPPED, the rest of the packet is void */
};

/* Why a test stopped early: empty while it is still fine. */
struct failure {
    char reason[64];
    int err;
};

static void fail(struct failure *f, const char *what, const char *kind, int err)
{
    snprintf(f->reason, sizeof(f->reason), "%s_%s_failed", what, kind);
    f->err = err;
}

/* Open one device; on failure fill *f the way the real guest names it. */
static int evdev_open(struct evdev *d, const char *kind, const char *path, struct failure *f)
{
    memset(d, 0, sizeof(*d));
    d->kind = kind;
    d->fd = -1;
    if (strcmp(path, "-") == 0) {
        /* The real guest's media-key test reads the keyboard's consumer
         * collection, and names the missing keyboard. */
        snprintf(f->reason, sizeof(f->reason), "missing_%s_device",
                 strcmp(kind, "consumer") == 0 ? "keyboard" : kind);
        f->err = ERR_NOT_FOUND;
        return -1;
    }
    d->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (d->fd < 0) {
        fail(f, "open", kind, errno);
        return -1;
    }
    return 0;
}

/* Forget what arrived before READY: the real guest starts reading there. */
static void evdev_drain(struct evdev *d)
{
    struct input_event ev[64];
    while (read(d->fd, ev, sizeof(ev)) > 0)
        ;
}

/* Called for each event of device `which`, and with ev == NULL at the end of
 * each packet (SYN_REPORT), after that packet was counted. */
typedef void (*event_handler)(void *state, int which, const struct input_event *ev);

/* Wait up to timeout_ms for input on any device and hand over what came.
 * 0: nothing came in time; 1: events were handled; -1: a read failed (*f says why). */
static int evdev_pump(struct evdev *devs, int n, long long timeout_ms, event_handler handle, void *state,
                      struct failure *f)
{
    struct pollfd pfd[4];
    for (int i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = devs[i].fd, .events = POLLIN};
    int ready = poll(pfd, (nfds_t)n, timeout_ms > 0 ? (int)timeout_ms : 0);
    if (ready < 0) {
        if (errno == EINTR)
            return 1;
        fail(f, "read", devs[0].kind, errno);
        return -1;
    }
    if (ready == 0)
        return 0;
    for (int i = 0; i < n; i++) {
        struct evdev *d = &devs[i];
        if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        struct input_event ev[64];
        ssize_t got = read(d->fd, ev, sizeof(ev));
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            fail(f, "read", d->kind, errno);
            return -1;
        }
        if (got == 0) {
            /* End of file: not an evdev node (a test's FIFO); stop watching it. */
            close(d->fd);
            d->fd = -1;
            continue;
        }
        if (got % (ssize_t)sizeof(ev[0]) != 0)
            d->bad_reports++;
        for (size_t k = 0; k < (size_t)got / sizeof(ev[0]); k++) {
            if (ev[k].type == EV_SYN && ev[k].code == SYN_DROPPED) {
                d->bad_reports++;
                d->dropping = 1;
            } else if (ev[k].type == EV_SYN && ev[k].code == SYN_REPORT) {
                if (!d->dropping) {
                    d->reports++;
                    handle(state, i, NULL);
                }
                d->dropping = 0;
            } else if (!d->dropping) {
                handle(state, i, &ev[k]);
            }
        }
    }
    return 1;
}

static void evdev_close(struct evdev *devs, int n)
{
    for (int i = 0; i < n; i++)
        if (devs[i].fd >= 0)
            close(devs[i].fd);
}

/* A key or button: down on 1 (2 is auto-repeat), up on 0 once it was down. */
static void key_edge(int value, int *down, int *up)
{
    if (value)
        *down = 1;
    else if (*down)
        *up = 1;
}

/* --- virtio-input-events (+ wheel, modifiers, buttons sub-tests) --- */

struct input_events {
    int shift_l, shift_r, b_held;
    int a_down, a_up, shift_b, ctrl_down, ctrl_up, alt_down, alt_up, f1_down, f1_up;
    int move, left_down, left_up, side_down, side_up, extra_down, extra_up;
    int saw_wheel, saw_hwheel, wheel_expected, hwheel_expected, wheel_unexpected, hwheel_unexpected;
    int wheel_total, hwheel_total, wheel_events, hwheel_events, wheel_last, hwheel_last;
};

static void input_events_event(void *state, int which, const struct input_event *ev)
{
    struct input_events *s = state;
    if (ev == NULL)
        return;
    if (which == 0 && ev->type == EV_KEY) {
        int v = ev->value;
        switch (ev->code) {
        case KEY_A: key_edge(v, &s->a_down, &s->a_up); break;
        case KEY_LEFTSHIFT: s->shift_l = v != 0; break;
        case KEY_RIGHTSHIFT: s->shift_r = v != 0; break;
        case KEY_B: s->b_held = v != 0; break;
        case KEY_LEFTCTRL: case KEY_RIGHTCTRL: key_edge(v, &s->ctrl_down, &s->ctrl_up); break;
        case KEY_LEFTALT: case KEY_RIGHTALT: key_edge(v, &s->alt_down, &s->alt_up); break;
        case KEY_F1: key_edge(v, &s->f1_down, &s->f1_up); break;
        }
        if (s->b_held && (s->shift_l || s->shift_r))
            s->shift_b = 1;
    } else if (which == 1 && ev->type == EV_REL) {
        int v = ev->value;
        if ((ev->code == REL_X || ev->code == REL_Y) && v != 0)
            s->move = 1;
        if (ev->code == REL_WHEEL && v != 0) {
            s->saw_wheel = 1;
            s->wheel_total += v;
            s->wheel_events++;
            if (v == WHEEL_DELTA) {
                s->wheel_expected = 1;
            } else {
                s->wheel_unexpected = 1;
                s->wheel_last = v;
            }
        }
        if (ev->code == REL_HWHEEL && v != 0) {
            s->saw_hwheel = 1;
            s->hwheel_total += v;
            s->hwheel_events++;
            if (v == HWHEEL_DELTA) {
                s->hwheel_expected = 1;
            } else {
                s->hwheel_unexpected = 1;
                s->hwheel_last = v;
            }
        }
    } else if (which == 1 && ev->type == EV_KEY) {
        switch (ev->code) {
        case BTN_LEFT: key_edge(ev->value, &s->left_down, &s->left_up); break;
        case BTN_SIDE: key_edge(ev->value, &s->side_down, &s->side_up); break;
        case BTN_EXTRA: key_edge(ev->value, &s->extra_down, &s->extra_up); break;
        }
    }
}

static int base_ok(const struct input_events *s)
{
    return s->a_down && s->a_up && s->move && s->left_down && s->left_up;
}

static int modifiers_ok(const struct input_events *s)
{
    return s->shift_b && s->ctrl_down && s->ctrl_up && s->alt_down && s->alt_up && s->f1_down && s->f1_up;
}

static int buttons_ok(const struct input_events *s)
{
    return s->side_down && s->side_up && s->extra_down && s->extra_up;
}

static int wheel_ok(const struct input_events *s)
{
    /* The host resends: multiples of the expected deltas are fine, other deltas are not. */
    return s->saw_wheel && s->saw_hwheel && s->wheel_expected && s->hwheel_expected && !s->wheel_unexpected &&
           !s->hwheel_unexpected;
}

static int input_events(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    int want_modifiers = 0, want_buttons = 0, want_wheel = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "modifiers") == 0)
            want_modifiers = 1;
        else if (strcmp(argv[i], "buttons") == 0)
            want_buttons = 1;
        else if (strcmp(argv[i], "wheel") == 0)
            want_wheel = 1;
        else
            return usage();
    }
    const int want_extra = want_modifiers || want_buttons || want_wheel;
    struct input_events s = {0};
    struct failure f = {"", 0};
    struct evdev devs[2] = {{.fd = -1}, {.fd = -1}};
    if (evdev_open(&devs[0], "keyboard", argv[0], &f) == 0 && evdev_open(&devs[1], "mouse", argv[1], &f) == 0) {
        evdev_drain(&devs[0]);
        evdev_drain(&devs[1]);
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|READY");

        const long long deadline = now_ms() + (want_extra ? 15000 : 10000);
        long long grace = 0;
        for (;;) {
            const int have_base = base_ok(&s);
            if (have_base && grace == 0) {
                /* A short grace for the wheel events the host sends after the base ones. */
                grace = now_ms() + 250 < deadline ? now_ms() + 250 : deadline;
            }
            if (want_extra) {
                if (have_base && (!want_modifiers || modifiers_ok(&s)) && (!want_buttons || buttons_ok(&s)) &&
                    (!want_wheel || wheel_ok(&s)))
                    break;
            } else if (have_base && ((s.saw_wheel && s.saw_hwheel) || now_ms() >= grace)) {
                break;
            }
            const long long until = (!want_extra && have_base) ? grace : deadline;
            if (evdev_pump(devs, 2, until - now_ms(), input_events_event, &s, &f) <= 0)
                break;
        }
    }
    evdev_close(devs, 2);

    const int ok = f.reason[0] == '\0' && base_ok(&s);
    const int mods = ok && modifiers_ok(&s), buttons = ok && buttons_ok(&s), wheel = ok && wheel_ok(&s);
    const int all = ok && (!want_modifiers || mods) && (!want_buttons || buttons) && (!want_wheel || wheel);
    if (!all && f.reason[0] == '\0') {
        snprintf(f.reason, sizeof(f.reason), "timeout");
        f.err = ERR_TIMEOUT;
    }
    const struct evdev *k = &devs[0], *m = &devs[1];
    char counts[512];
    snprintf(counts, sizeof(counts),
             "kbd_reports=%d|mouse_reports=%d|kbd_bad_reports=%d|mouse_bad_reports=%d|kbd_a_down=%d|kbd_a_up=%d|"
             "mouse_move=%d|mouse_left_down=%d|mouse_left_up=%d",
             k->reports, m->reports, k->bad_reports, m->bad_reports, s.a_down, s.a_up, s.move, s.left_down,
             s.left_up);
    if (ok)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|PASS|%s", counts);
    else
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|FAIL|reason=%s|err=%d|%s", f.reason, f.err, counts);

    /* The wheel as its own test, judged on what came, whatever was asked. */
    if (!ok)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|SKIP|input_events_failed|reason=%s|err=%d|"
               "wheel_total=%d|hwheel_total=%d",
               f.reason, f.err, s.wheel_total, s.hwheel_total);
    else if (!s.saw_wheel && !s.saw_hwheel)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|SKIP|not_observed|wheel_total=%d|hwheel_total=%d",
               s.wheel_total, s.hwheel_total);
    else if (!s.saw_wheel || !s.saw_hwheel)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|FAIL|reason=missing_axis|wheel_total=%d|"
               "hwheel_total=%d|saw_wheel=%d|saw_hwheel=%d",
               s.wheel_total, s.hwheel_total, s.saw_wheel, s.saw_hwheel);
    else if (s.wheel_unexpected || s.hwheel_unexpected)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|FAIL|reason=unexpected_delta|wheel_total=%d|"
               "hwheel_total=%d|expected_wheel=%d|expected_hwheel=%d|wheel_events=%d|hwheel_events=%d|"
               "wheel_unexpected_last=%d|hwheel_unexpected_last=%d",
               s.wheel_total, s.hwheel_total, WHEEL_DELTA, HWHEEL_DELTA, s.wheel_events, s.hwheel_events,
               s.wheel_last, s.hwheel_last);
    else if (s.wheel_expected && s.hwheel_expected)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|PASS|wheel_total=%d|hwheel_total=%d|"
               "expected_wheel=%d|expected_hwheel=%d|wheel_events=%d|hwheel_events=%d",
               s.wheel_total, s.hwheel_total, WHEEL_DELTA, HWHEEL_DELTA, s.wheel_events, s.hwheel_events);
    else
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-wheel|FAIL|reason=delta_mismatch|wheel_total=%d|"
               "hwheel_total=%d|expected_wheel=%d|expected_hwheel=%d|wheel_events=%d|hwheel_events=%d|"
               "saw_wheel_expected=%d|saw_hwheel_expected=%d",
               s.wheel_total, s.hwheel_total, WHEEL_DELTA, HWHEEL_DELTA, s.wheel_events, s.hwheel_events,
               s.wheel_expected, s.hwheel_expected);

    if (!want_modifiers)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-modifiers|SKIP|flag_not_set");
    else if (mods)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-modifiers|PASS|kbd_reports=%d|kbd_bad_reports=%d|"
               "shift_b=%d|ctrl=%d|alt=%d|f1=%d",
               k->reports, k->bad_reports, s.shift_b, s.ctrl_down && s.ctrl_up, s.alt_down && s.alt_up,
               s.f1_down && s.f1_up);
    else
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-modifiers|FAIL|reason=%s|err=%d|kbd_reports=%d|"
               "kbd_bad_reports=%d|shift_b=%d|ctrl_down=%d|ctrl_up=%d|alt_down=%d|alt_up=%d|f1_down=%d|f1_up=%d",
               f.reason, f.err, k->reports, k->bad_reports, s.shift_b, s.ctrl_down, s.ctrl_up, s.alt_down,
               s.alt_up, s.f1_down, s.f1_up);

    char mouse_buttons[256];
    snprintf(mouse_buttons, sizeof(mouse_buttons),
             "mouse_reports=%d|mouse_bad_reports=%d|side_down=%d|side_up=%d|extra_down=%d|extra_up=%d",
             m->reports, m->bad_reports, s.side_down, s.side_up, s.extra_down, s.extra_up);
    if (!want_buttons)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-buttons|SKIP|flag_not_set");
    else if (buttons)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-buttons|PASS|%s", mouse_buttons);
    else
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-buttons|FAIL|reason=%s|err=%d|%s", f.reason, f.err,
               mouse_buttons);

    char mouse_wheel[256];
    snprintf(mouse_wheel, sizeof(mouse_wheel),
             "mouse_reports=%d|mouse_bad_reports=%d|wheel_total=%d|hwheel_total=%d|expected_wheel=%d|"
             "expected_hwheel=%d|saw_wheel=%d|saw_hwheel=%d",
             m->reports, m->bad_reports, s.wheel_total, s.hwheel_total, WHEEL_DELTA, HWHEEL_DELTA, s.saw_wheel,
             s.saw_hwheel);
    if (!want_wheel)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-wheel|SKIP|flag_not_set");
    else if (wheel)
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-wheel|PASS|%s", mouse_wheel);
    else
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-events-wheel|FAIL|reason=%s|err=%d|%s", f.reason, f.err,
               mouse_wheel);
    return all ? 0 : 1;
}

/* --- virtio-input-media-keys --- */

struct media_keys {
    int down, up;
};

static void media_keys_event(void *state, int which, const struct input_event *ev)
{
    struct media_keys *s = state;
    (void)which;
    if (ev != NULL && ev->type == EV_KEY && ev->code == KEY_VOLUMEUP)
        key_edge(ev->value, &s->down, &s->up);
}

static int input_media_keys(int argc, char **argv)
{
    if (argc != 1)
        return usage();
    struct media_keys s = {0};
    struct failure f = {"", 0};
    struct evdev d;
    if (evdev_open(&d, "consumer", argv[0], &f) == 0) {
        evdev_drain(&d);
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-media-keys|READY");
        const long long deadline = now_ms() + 10000;
        while (!(s.down && s.up) && evdev_pump(&d, 1, deadline - now_ms(), media_keys_event, &s, &f) > 0)
            ;
    }
    evdev_close(&d, 1);
    const int ok = s.down && s.up;
    if (ok) {
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-media-keys|PASS|reports=%d|volume_up_down=%d|"
               "volume_up_up=%d",
               d.reports, s.down, s.up);
        return 0;
    }
    if (f.reason[0] == '\0') {
        snprintf(f.reason, sizeof(f.reason), "timeout");
        f.err = ERR_TIMEOUT;
    }
    marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-media-keys|FAIL|reason=%s|err=%d|reports=%d|volume_up_down=%d|"
           "volume_up_up=%d",
           f.reason, f.err, d.reports, s.down, s.up);
    return 1;
}

/* --- virtio-input-tablet-events --- */

struct tablet {
    int max_x, max_y; /* the device's ABS maximum, 0 when unknown */
    int x, y, left;   /* the device's state, as evdev keeps it */
    int move_target, left_down, left_up;
    int last_x, last_y, last_left; /* as of the last report */
};

/* The host sends on QMP's 0..32767 scale; a device may report that value as
 * is, clamped to its own maximum, or scaled to it. Within 2, as the real guest. */
static int tablet_coord_matches(int observed, int host, int max)
{
    const int tol = 2;
    if (abs(observed - host) <= tol)
        return 1;
    if (max > 0) {
        if (abs(observed - (host < max ? host : max)) <= tol)
            return 1;
        const long long scaled = ((long long)host * max + QMP_ABS_MAX / 2) / QMP_ABS_MAX;
        if (llabs(observed - scaled) <= tol)
            return 1;
    }
    return 0;
}

static void tablet_event(void *state, int which, const struct input_event *ev)
{
    struct tablet *s = state;
    (void)which;
    if (ev == NULL) {
        s->last_x = s->x;
        s->last_y = s->y;
        s->last_left = s->left;
        if (tablet_coord_matches(s->x, TABLET_X, s->max_x) && tablet_coord_matches(s->y, TABLET_Y, s->max_y))
            s->move_target = 1;
        key_edge(s->left, &s->left_down, &s->left_up);
    } else if (ev->type == EV_ABS && ev->code == ABS_X) {
        s->x = ev->value;
    } else if (ev->type == EV_ABS && ev->code == ABS_Y) {
        s->y = ev->value;
    } else if (ev->type == EV_KEY && ev->code == BTN_LEFT) {
        s->left = ev->value != 0;
    }
}

static int input_tablet_events(int argc, char **argv)
{
    if (argc != 1)
        return usage();
    if (strcmp(argv[0], "-") == 0) {
        /* Opt-in and possibly enabled on an image without a tablet: no failure. */
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet-events|SKIP|no_tablet_device");
        return 0;
    }
    struct tablet s = {0};
    struct failure f = {"", 0};
    struct evdev d;
    if (evdev_open(&d, "tablet", argv[0], &f) == 0) {
        struct input_absinfo ax, ay;
        if (ioctl(d.fd, EVIOCGABS(ABS_X), &ax) == 0 && ioctl(d.fd, EVIOCGABS(ABS_Y), &ay) == 0) {
            s.max_x = ax.maximum;
            s.max_y = ay.maximum;
            s.x = ax.value;
            s.y = ay.value;
            marker("virtio-input-tablet-events: abs_x=%d..%d abs_y=%d..%d", ax.minimum, ax.maximum, ay.minimum,
                   ay.maximum);
        }
        evdev_drain(&d);
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet-events|READY");
        const long long deadline = now_ms() + 10000;
        while (!(s.move_target && s.left_down && s.left_up) &&
               evdev_pump(&d, 1, deadline - now_ms(), tablet_event, &s, &f) > 0)
            ;
    }
    evdev_close(&d, 1);
    char fields[256];
    snprintf(fields, sizeof(fields),
             "tablet_reports=%d|move_target=%d|left_down=%d|left_up=%d|last_x=%d|last_y=%d|last_left=%d", d.reports,
             s.move_target, s.left_down, s.left_up, s.last_x, s.last_y, s.last_left);
    if (s.move_target && s.left_down && s.left_up) {
        marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet-events|PASS|%s", fields);
        return 0;
    }
    if (f.reason[0] == '\0') {
        snprintf(f.reason, sizeof(f.reason), "timeout");
        f.err = ERR_TIMEOUT;
    }
    marker("AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet-events|FAIL|reason=%s|err=%d|%s", f.reason, f.err, fields);
    return 1;
}

static int evdev_test(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "input-events") == 0)
        return input_events(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "input-media-keys") == 0)
        return input_media_keys(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "input-tablet-events") == 0)
        return input_tablet_events(argc - 1, argv + 1);
    return usage();
}

/* --- snd: ALSA PCM through its ioctls (<sound/asound.h>) --------------- */

#define SND_RATE 48000
#define SND_CHANNELS 2
/* 440 Hz at about a third of full scale: far above the host's silence thresholds. */
#define SND_TONE_HZ 440.0
#define SND_TONE_AMPLITUDE 10000.0
/* A capture sample above this counts as sound (16-bit scale), as the host's peak threshold. */
#define SND_NON_SILENCE 200

struct pcm {
    const char *path;
    int fd;
    int capture;
    unsigned long period_frames;
    unsigned long buffer_frames;
    unsigned long frames; /* moved so far */
    unsigned long wanted;
    int xruns;
    int peak; /* the largest absolute sample moved */
};

static void hw_any(struct snd_pcm_hw_params *p)
{
    memset(p, 0, sizeof(*p));
    for (int i = SNDRV_PCM_HW_PARAM_FIRST_MASK; i <= SNDRV_PCM_HW_PARAM_LAST_MASK; i++)
        memset(&p->masks[i - SNDRV_PCM_HW_PARAM_FIRST_MASK], 0xff, sizeof(struct snd_mask));
    for (int i = SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; i <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL; i++) {
        struct snd_interval *iv = &p->intervals[i - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
        iv->min = 0;
        iv->max = ~0U;
    }
    p->rmask = ~0U;
    p->info = ~0U;
}

static void hw_mask(struct snd_pcm_hw_params *p, int param, unsigned int value)
{
    struct snd_mask *m = &p->masks[param - SNDRV_PCM_HW_PARAM_FIRST_MASK];
    memset(m, 0, sizeof(*m));
    m->bits[value >> 5] |= 1U << (value & 31);
}

static void hw_range(struct snd_pcm_hw_params *p, int param, unsigned int min, unsigned int max)
{
    struct snd_interval *iv = &p->intervals[param - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
    iv->min = min;
    iv->max = max;
    iv->openmin = iv->openmax = iv->empty = 0;
    iv->integer = 1;
}

static unsigned int hw_value(const struct snd_pcm_hw_params *p, int param)
{
    return p->intervals[param - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL].min;
}

/* Open and set up one PCM; on failure, a reason in f. */
static int pcm_open(struct pcm *d, const char *path, int capture, unsigned long wanted, struct failure *f)
{
    struct snd_pcm_hw_params p;
    memset(d, 0, sizeof(*d));
    d->path = path;
    d->capture = capture;
    d->wanted = wanted;
    d->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (d->fd < 0) {
        fail(f, capture ? "capture" : "playback", "open", errno);
        return -1;
    }
    /* Periods of 20 ms to 100 ms, at most 400 ms buffered: few interrupts under TCG.
     * The kernel picks the smallest period and the largest buffer within them. */
    for (int attempt = 0; attempt < 2; attempt++) {
        hw_any(&p);
        hw_mask(&p, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
        hw_mask(&p, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
        hw_mask(&p, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
        hw_range(&p, SNDRV_PCM_HW_PARAM_CHANNELS, SND_CHANNELS, SND_CHANNELS);
        hw_range(&p, SNDRV_PCM_HW_PARAM_RATE, SND_RATE, SND_RATE);
        if (attempt == 0) {
            hw_range(&p, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, SND_RATE / 50, SND_RATE / 10);
            hw_range(&p, SNDRV_PCM_HW_PARAM_BUFFER_SIZE, SND_RATE / 25, SND_RATE * 2 / 5);
        }
        if (ioctl(d->fd, SNDRV_PCM_IOCTL_HW_PARAMS, &p) == 0)
            break;
        if (attempt == 1) {
            fail(f, capture ? "capture" : "playback", "hw_params", errno);
            return -1;
        }
    }
    d->period_frames = hw_value(&p, SNDRV_PCM_HW_PARAM_PERIOD_SIZE);
    d->buffer_frames = hw_value(&p, SNDRV_PCM_HW_PARAM_BUFFER_SIZE);
    if (ioctl(d->fd, SNDRV_PCM_IOCTL_PREPARE) < 0) {
        fail(f, capture ? "capture" : "playback", "prepare", errno);
        return -1;
    }
    if (capture && ioctl(d->fd, SNDRV_PCM_IOCTL_START) < 0) {
        fail(f, "capture", "start", errno);
        return -1;
    }
    return 0;
}

/* The tone: a sine by rotating a unit vector each sample (no libm in the static tool). */
struct tone {
    double c, s, x, y;
    int silent;
};

static void tone_init(struct tone *t, int silent)
{
    double w = 2.0 * 3.14159265358979323846 * SND_TONE_HZ / SND_RATE;
    double w2 = w * w;
    t->c = 1.0 - w2 / 2.0 + w2 * w2 / 24.0 - w2 * w2 * w2 / 720.0;
    t->s = w - w * w2 / 6.0 + w * w2 * w2 / 120.0 - w * w2 * w2 * w2 / 5040.0;
    t->x = 1.0;
    t->y = 0.0;
    t->silent = silent;
}

static void tone_fill(struct tone *t, short *buf, unsigned long frames)
{
    for (unsigned long i = 0; i < frames; i++) {
        double x = t->x * t->c - t->y * t->s;
        double y = t->x * t->s + t->y * t->c;
        t->x = x;
        t->y = y;
        short v = t->silent ? 0 : (short)(y * SND_TONE_AMPLITUDE);
        for (int ch = 0; ch < SND_CHANNELS; ch++)
            buf[i * SND_CHANNELS + ch] = v;
    }
}

static void pcm_peak(struct pcm *d, const short *buf, unsigned long frames)
{
    for (unsigned long i = 0; i < frames * SND_CHANNELS; i++) {
        int v = buf[i] < 0 ? -buf[i] : buf[i];
        if (v > d->peak)
            d->peak = v;
    }
}

/* Move what the device takes or gives now; -1 with a reason on a hard error. */
static int pcm_pump(struct pcm *d, struct tone *t, short *buf, unsigned long chunk, struct failure *f)
{
    unsigned long left = d->wanted - d->frames;
    if (left > chunk)
        left = chunk;
    if (left == 0)
        return 0;
    struct snd_xferi x = {.buf = buf, .frames = (snd_pcm_uframes_t)left};
    if (!d->capture)
        tone_fill(t, buf, left); /* the tone's phase goes on only with what is written */
    int rc = ioctl(d->fd, d->capture ? SNDRV_PCM_IOCTL_READI_FRAMES : SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x);
    if (rc < 0 && errno == EPIPE) {
        /* An underrun or overrun: count it and go on, as an audio client would. */
        d->xruns++;
        if (ioctl(d->fd, SNDRV_PCM_IOCTL_PREPARE) < 0 ||
            (d->capture && ioctl(d->fd, SNDRV_PCM_IOCTL_START) < 0)) {
            fail(f, d->capture ? "capture" : "playback", "xrun_recovery", errno);
            return -1;
        }
        rc = 0;
        x.result = 0;
    }
    if (rc < 0 && errno != EAGAIN && errno != EINTR) {
        fail(f, d->capture ? "capture" : "playback", d->capture ? "read" : "write", errno);
        return -1;
    }
    if (rc < 0)
        x.result = 0;
    if (!d->capture && (unsigned long)x.result < left) {
        /* Take the tone back to where the device stopped taking it. */
        for (unsigned long i = (unsigned long)x.result; i < left; i++) {
            double x0 = t->x * t->c + t->y * t->s;
            double y0 = -t->x * t->s + t->y * t->c;
            t->x = x0;
            t->y = y0;
        }
    }
    pcm_peak(d, buf, (unsigned long)x.result);
    d->frames += (unsigned long)x.result;
    return 0;
}

static void pcm_close(struct pcm *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

static int snd_test(int argc, char **argv)
{
    const char *play_path = NULL, *cap_path = NULL, *sound = "tone";
    const char *seconds_arg;
    if (argc == 4 && strcmp(argv[0], "play") == 0) {
        play_path = argv[1];
        seconds_arg = argv[2];
        sound = argv[3];
    } else if (argc == 3 && strcmp(argv[0], "capture") == 0) {
        cap_path = argv[1];
        seconds_arg = argv[2];
    } else if (argc == 5 && strcmp(argv[0], "duplex") == 0) {
        play_path = argv[1];
        cap_path = argv[2];
        seconds_arg = argv[3];
        sound = argv[4];
    } else {
        return usage();
    }
    int seconds = atoi(seconds_arg);
    if (seconds <= 0 || seconds > 60 || (strcmp(sound, "tone") != 0 && strcmp(sound, "silence") != 0))
        return usage();
    unsigned long wanted = (unsigned long)seconds * SND_RATE;
    struct failure f = {"", 0};
    struct pcm play = {.fd = -1}, cap = {.fd = -1};
    struct tone t;
    tone_init(&t, strcmp(sound, "silence") == 0);
    static short play_buf[SND_RATE * SND_CHANNELS], cap_buf[SND_RATE * SND_CHANNELS];
    long long started = now_ms();
    if (play_path)
        pcm_open(&play, play_path, 0, wanted, &f);
    if (!f.reason[0] && cap_path)
        pcm_open(&cap, cap_path, 1, wanted, &f);
    /* Real time plus 10 s: a device that stops moving frames fails, it does not hang. */
    long long deadline = started + (long long)seconds * 1000 + 10000;
    while (!f.reason[0] && ((play_path && play.frames < play.wanted) || (cap_path && cap.frames < cap.wanted))) {
        struct pollfd pfd[2];
        int n = 0;
        if (play_path && play.frames < play.wanted)
            pfd[n++] = (struct pollfd){.fd = play.fd, .events = POLLOUT};
        if (cap_path && cap.frames < cap.wanted)
            pfd[n++] = (struct pollfd){.fd = cap.fd, .events = POLLIN};
        long long left = deadline - now_ms();
        if (left <= 0) {
            /* playback_timeout / capture_timeout: the device stopped taking or giving frames. */
            snprintf(f.reason, sizeof(f.reason), "%s_timeout",
                     play_path && play.frames < play.wanted ? "playback" : "capture");
            f.err = ETIMEDOUT;
            break;
        }
        if (poll(pfd, (nfds_t)n, (int)(left < 200 ? left : 200)) < 0 && errno != EINTR) {
            fail(&f, "pcm", "poll", errno);
            break;
        }
        if (play_path && pcm_pump(&play, &t, play_buf, SND_RATE / 10, &f) < 0)
            break;
        if (cap_path && pcm_pump(&cap, &t, cap_buf, SND_RATE / 10, &f) < 0)
            break;
    }
    if (!f.reason[0] && play_path) {
        /* Every written frame reaches the device before the test says PASS. */
        int flags = fcntl(play.fd, F_GETFL);
        if (flags < 0 || fcntl(play.fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
            ioctl(play.fd, SNDRV_PCM_IOCTL_DRAIN) < 0)
            fail(&f, "playback", "drain", errno);
    }
    long long elapsed = now_ms() - started;
    pcm_close(&play);
    pcm_close(&cap);

    char out[512];
    int n = 0;
    if (play_path && cap_path)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "frames=%lu|captured_frames=%lu|non_silence=%d",
                      play.frames, cap.frames, cap.peak > SND_NON_SILENCE);
    else if (play_path)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "frames=%lu", play.frames);
    else
        n += snprintf(out + n, sizeof(out) - (size_t)n, "method=alsa|frames=%lu|non_silence=%d|silence_only=%d",
                      cap.frames, cap.peak > SND_NON_SILENCE, cap.peak <= SND_NON_SILENCE);
    n += snprintf(out + n, sizeof(out) - (size_t)n, "|rate=%d|channels=%d|format=s16le", SND_RATE, SND_CHANNELS);
    if (play_path)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "|sound=%s|peak=%d|period_frames=%lu|buffer_frames=%lu|underruns=%d",
                      sound, play.peak, play.period_frames, play.buffer_frames, play.xruns);
    if (cap_path)
        n += snprintf(out + n, sizeof(out) - (size_t)n, "|capture_peak=%d|capture_period_frames=%lu|overruns=%d",
                      cap.peak, cap.period_frames, cap.xruns);
    n += snprintf(out + n, sizeof(out) - (size_t)n, "|elapsed_ms=%lld", elapsed);
    if (f.reason[0])
        snprintf(out + n, sizeof(out) - (size_t)n, "|reason=%s|err=%d", f.reason, f.err);
    printf("%s\n", out);
    return f.reason[0] ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "udp-echo") == 0)
        return udp_echo(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "evdev") == 0)
        return evdev_test(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "snd") == 0)
        return snd_test(argc - 2, argv + 2);
    return usage();
}
