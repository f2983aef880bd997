/*
 * aero-guest-tool: what the test guest needs beyond busybox, one subcommand each.
 * Built with gcc -static when the test guest is built; init calls it.
 *
 *   aero-guest-tool udp-echo HOST PORT SIZE...
 *
 * udp-echo sends one datagram of each SIZE (bytes 0, 1, 2, ... 255, 0, ...) to
 * HOST:PORT and waits up to 2 s for it to come back unchanged, as the Windows
 * selftest does with 32 and 1400 bytes. It prints one line,
 * "<bytes of the last datagram tried> <reason>", reason "-" when every size
 * came back, and exits 0 then, 1 on a failed echo, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_DATAGRAM 65507

static int usage(void)
{
    fprintf(stderr, "usage: aero-guest-tool udp-echo HOST PORT SIZE...\n");
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

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "udp-echo") == 0)
        return udp_echo(argc - 2, argv + 2);
    return usage();
}
