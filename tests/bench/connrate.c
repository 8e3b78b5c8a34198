/* R1's load: TCP connects in a tight loop, so the rate measures the path the SYN and its
 * answer take (the load balancer, the iptables rules, the forwarding) rather than an
 * interpreter's per-connection cost. Built by the bench into .gen/ at its start.
 *
 *   connrate server PORT                    accept and close until killed; prints "ready"
 *   connrate client HOST PORT COUNT SECS    connect COUNT times (at most SECS seconds),
 *                                           each closed with RST (no TIME_WAIT, no port
 *                                           exhaustion); prints "done failed seconds"
 * HOST is an IPv4 or IPv6 literal. A connect that takes over a second counts as failed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int server(int port)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                             .sin6_addr = IN6ADDR_ANY_INIT};
    int one = 1, zero = 0, s = socket(AF_INET6, SOCK_STREAM, 0);

    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0 ||
        bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4096) < 0) {
        perror("connrate server");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int c = accept(s, NULL, NULL);

        if (c >= 0)
            close(c);
    }
}

static int client(const char *host, int port, long count, double secs)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    struct timeval timeout = {.tv_sec = 1};
    socklen_t len;
    long n = 0, failed = 0;
    double t0, end;
    int family;

    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        family = a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        family = a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        len = sizeof(*a6);
    } else {
        fprintf(stderr, "connrate client: %s is not an IP address\n", host);
        return 2;
    }
    t0 = now();
    end = t0 + secs;
    while (n < count && now() < end) {
        int s = socket(family, SOCK_STREAM, 0);

        if (s < 0) {
            perror("connrate client: socket");
            return 1;
        }
        /* connect() honours the send timeout */
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
        if (connect(s, (struct sockaddr *)&ss, len) == 0)
            n++;
        else
            failed++;
        setsockopt(s, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
        close(s);
    }
    printf("%ld %ld %f\n", n, failed, now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "server"))
        return server(atoi(argv[2]));
    if (argc == 6 && !strcmp(argv[1], "client"))
        return client(argv[2], atoi(argv[3]), atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: connrate server PORT | client HOST PORT COUNT SECS\n");
    return 2;
}
