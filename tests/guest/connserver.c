/*
 * connserver: the benchmark's server inside the test guest. One process, one thread, an epoll loop, no fork: a
 * connection costs the guest an accept, a read, a write and a close, so the connection rate measures the network
 * backend rather than the guest's fork (a forking socat made every backend read about 50 connections per second).
 *
 *   connserver close PORT   each connection: read a request (up to 64 bytes), answer one byte 'k', close.
 *   connserver echo PORT    each connection: echo every byte back until the peer closes (request/response timing).
 *   connserver die PORT     a connection's 'h' is answered 'r' (the client knows a live server holds it); any other
 *                           byte makes the process SIGKILL itself, and the guest kernel closes or resets the
 *                           connection: the time until the host client sees that is the backend's "app died"
 *                           latency. The bench restarts it in a shell loop. (The client speaks first: Debian's passt
 *                           does not pass on data the guest sends on a forwarded connection before the host has.)
 *
 * Built statically by tests/guest/build-guest.sh with the host's gcc (Debian gcc, libc6-dev).
 * Limits: MAX_EVENTS per epoll_wait; connections are bounded by the process's file descriptors (accept failures
 * with EMFILE are counted and reported on exit, never fatal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define REQUEST_MAX 64
#define ECHO_BUF 65536

enum mode { MODE_CLOSE, MODE_ECHO, MODE_DIE };

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a;

	if (fd < 0) {
		perror("connserver: socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)port);
	a.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0) {
		perror("connserver: bind/listen");
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	static char buf[ECHO_BUF];
	struct epoll_event ev, events[MAX_EVENTS];
	enum mode mode;
	int lfd, ep, port;
	unsigned long accept_failures = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: connserver close|echo|die PORT\n");
		return 2;
	}
	if (!strcmp(argv[1], "close"))
		mode = MODE_CLOSE;
	else if (!strcmp(argv[1], "echo"))
		mode = MODE_ECHO;
	else if (!strcmp(argv[1], "die"))
		mode = MODE_DIE;
	else {
		fprintf(stderr, "connserver: unknown mode '%s'\n", argv[1]);
		return 2;
	}
	port = atoi(argv[2]);
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "connserver: bad port '%s'\n", argv[2]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	lfd = listen_on(port);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("connserver: epoll_create1");
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

	for (;;) {
		int n = epoll_wait(ep, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("connserver: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;

			if (fd == lfd) {
				for (;;) {
					int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					int one = 1;

					if (c < 0) {
						if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
							accept_failures++;
						break;
					}
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.fd = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
						close(c);
				}
				continue;
			}

			ssize_t got = read(fd, buf, mode == MODE_ECHO ? sizeof(buf) : REQUEST_MAX);

			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (got <= 0) {
				close(fd); /* peer closed or reset: closing also removes it from the epoll set */
				continue;
			}
			switch (mode) {
			case MODE_CLOSE:
				(void)!write(fd, "k", 1);
				close(fd);
				break;
			case MODE_ECHO:
				/* Request/response sizes are tiny: a short write means the peer stopped reading; drop it. */
				if (write(fd, buf, (size_t)got) != got)
					close(fd);
				break;
			case MODE_DIE:
				if (got == 1 && buf[0] == 'h') {
					if (write(fd, "r", 1) != 1)
						close(fd);
					break;
				}
				kill(getpid(), SIGKILL);
				break;
			}
		}
		if (accept_failures && (accept_failures & 1023) == 1)
			fprintf(stderr, "connserver: %lu accept failures\n", accept_failures);
	}
}
