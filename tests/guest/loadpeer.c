/*
 * loadpeer: the guest side of the load-with-integrity tests (tests/Emunet.Integration.Tests/LoadTests.cs). One
 * process, one epoll loop, thousands of connections: busybox or socat would need a process per connection, which a
 * TCG guest cannot afford at 1,000.
 *
 *   loadpeer echo PORT              accept on PORT and echo every byte back on each connection
 *   loadpeer hold PORT              accept on PORT and never read (an app that does not read)
 *   loadpeer client ADDR PORT N LEN open N connections at once to ADDR:PORT; on connection i send LEN bytes of
 *                                   stream(i) (below), read LEN bytes back and compare them with stream(i);
 *                                   prints "loadpeer: N ok" or the first mismatch, exits 0 only if all N match
 *
 * stream(i) is xorshift32 seeded with 0x9E3779B9 ^ (i + 1), one byte per step (the low byte), so the host side can
 * regenerate what a connection sent and check its sha256. Built static by the test (gcc -static -O2).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAXC 8192
#define BUF 65536

struct conn { int fd; uint32_t tx, rx; long sent, recvd; int done; unsigned char pend[BUF]; int plen, poff; };
static struct conn *conns[MAXC];

static uint32_t next(uint32_t *s) { uint32_t x = *s; x ^= x << 13; x ^= x >> 17; x ^= x << 5; *s = x; return x; }

static int listener(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) { perror("loadpeer: listen"); exit(2); }
    return s;
}

static void serve(int port, int echo)
{
    int l = listener(port), ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = -1 }, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    printf("loadpeer: %s on %d\n", echo ? "echo" : "hold", port);
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == -1) {
                int c;
                while ((c = accept4(l, 0, 0, SOCK_NONBLOCK)) >= 0) {
                    if (!echo || c >= MAXC) continue; /* hold: keep it, never read */
                    conns[c] = calloc(1, sizeof(struct conn));
                    conns[c]->fd = c;
                    struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            struct conn *k = conns[evs[i].data.fd];
            if (!k) continue;
            if (k->plen > k->poff) { /* flush what the peer could not take */
                ssize_t w = write(k->fd, k->pend + k->poff, k->plen - k->poff);
                if (w > 0) k->poff += w;
                if (k->poff < k->plen) continue;
                k->plen = k->poff = 0;
                struct epoll_event ce = { .events = EPOLLIN, .data.fd = k->fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ce);
            }
            ssize_t r = read(k->fd, k->pend, BUF);
            if (r == 0 || (r < 0 && errno != EAGAIN)) { close(k->fd); conns[k->fd] = 0; free(k); continue; }
            if (r < 0) continue;
            ssize_t w = write(k->fd, k->pend, r);
            if (w < 0) w = 0;
            if (w < r) { /* back-pressure: stop reading until the rest is written */
                k->plen = r; k->poff = w;
                struct epoll_event ce = { .events = EPOLLOUT, .data.fd = k->fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ce);
            }
        }
    }
}

/* Opens a connection for index i and watches it for the end of its connect. */
static struct conn *dial(int ep, struct sockaddr_in *a, int i)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) { perror("loadpeer: socket"); exit(2); }
    if (connect(s, (struct sockaddr *)a, sizeof *a) && errno != EINPROGRESS) { perror("loadpeer: connect"); exit(2); }
    struct conn *k = calloc(1, sizeof(struct conn));
    k->fd = s; k->tx = k->rx = 0x9E3779B9u ^ (uint32_t)(i + 1);
    struct epoll_event ce = { .events = EPOLLOUT, .data.u32 = (uint32_t)i };
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ce);
    return k;
}

static int failed(struct conn *k, int i)
{
    int err = 0; socklen_t sl = sizeof err;
    getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
    printf("loadpeer: connection %d failed: %s\n", i, strerror(err ? err : ECONNRESET));
    return 1;
}

/*
 * Phase 1 connects all N, at most 128 connects in flight (a burst of SYNs beyond the engine's half-open cap would be
 * refused by design); phase 2 starts only when all N are established, so all N are open at once while data flows.
 */
static int client(const char *addr, int port, int count, long len)
{
    int ep = epoll_create1(0), done = 0, bad = 0, dialed = 0, open = 0;
    struct epoll_event evs[256];
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, addr, &a.sin_addr);
    static struct conn *byIndex[MAXC];
    if (count > MAXC) count = MAXC;
    while (dialed < count && dialed < 128) { byIndex[dialed] = dial(ep, &a, dialed); dialed++; }
    while (open < count) {
        int n = epoll_wait(ep, evs, 256, 60000);
        if (n <= 0) { printf("loadpeer: %d of %d connected, stalled\n", open, count); return 1; }
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            struct conn *k = byIndex[i];
            if (evs[e].events & (EPOLLERR | EPOLLHUP)) return failed(k, i);
            struct epoll_event ce = { .events = 0, .data.u32 = (uint32_t)i };
            epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ce);
            open++;
            if (dialed < count) { byIndex[dialed] = dial(ep, &a, dialed); dialed++; }
        }
    }
    printf("loadpeer: %d connected\n", open);
    for (int i = 0; i < count; i++) {
        struct epoll_event ce = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_MOD, byIndex[i]->fd, &ce);
    }
    unsigned char buf[BUF];
    while (done < count) {
        int n = epoll_wait(ep, evs, 256, 60000);
        if (n <= 0) { printf("loadpeer: stalled with %d of %d done\n", done, count); return 1; }
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            struct conn *k = byIndex[i];
            if (k->done) continue;
            if (evs[e].events & EPOLLERR) return failed(k, i);
            if ((evs[e].events & EPOLLOUT) && k->sent < len) {
                long want = len - k->sent < BUF ? len - k->sent : BUF;
                uint32_t s = k->tx;
                for (long j = 0; j < want; j++) buf[j] = (unsigned char)next(&s);
                ssize_t w = write(k->fd, buf, want);
                if (w > 0) {
                    for (long j = 0; j < w; j++) next(&k->tx); /* advance by what was taken */
                    k->sent += w;
                }
                if (k->sent == len) {
                    struct epoll_event ce = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
                    epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ce);
                }
            }
            if (evs[e].events & (EPOLLIN | EPOLLHUP)) {
                ssize_t r = read(k->fd, buf, BUF);
                if (r == 0 || (r < 0 && errno != EAGAIN)) { printf("loadpeer: connection %d closed after %ld of %ld bytes\n", i, k->recvd, len); return 1; }
                for (ssize_t j = 0; j < r; j++)
                    if (buf[j] != (unsigned char)next(&k->rx)) { if (!bad++) printf("loadpeer: connection %d differs at byte %ld\n", i, k->recvd + j); break; }
                if (r > 0) k->recvd += r;
                if (k->recvd >= len) { k->done = 1; done++; close(k->fd); }
            }
        }
    }
    printf("loadpeer: %d ok%s\n", count - bad, bad ? " (mismatches above)" : "");
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct rlimit nofile = { 16384, 16384 };
    setrlimit(RLIMIT_NOFILE, &nofile);
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "echo")) serve(atoi(argv[2]), 1);
    if (argc == 3 && !strcmp(argv[1], "hold")) serve(atoi(argv[2]), 0);
    if (argc == 6 && !strcmp(argv[1], "client")) return client(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
    fprintf(stderr, "usage: loadpeer echo PORT | hold PORT | client ADDR PORT N LEN\n");
    return 2;
}
