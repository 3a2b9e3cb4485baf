/*
 * What every tether example shares: report a failure with its result name and the
 * library's message, then exit; and (for the examples with their own socket) a TCP connect.
 */
#ifndef TETHER_EXAMPLE_COMMON_H
#define TETHER_EXAMPLE_COMMON_H

#include <tether.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void check(tether_result r, const char *what) {
    char message[512];
    size_t len = 0;
    if (r == TETHER_RESULT_OK) return;
    if (tether_last_error(message, sizeof message, &len) != TETHER_RESULT_OK) message[0] = '\0';
    fprintf(stderr, "%s: %s: %s\n", what, tether_result_name((uint32_t)r), message);
    exit(1);
}

/* A TCP connection to host:port, or -1. */
static inline int tcp_connect(const char *host, const char *port) {
    struct addrinfo hints, *res, *ai;
    int fd = -1;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

#endif
