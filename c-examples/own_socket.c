/*
 * own_socket: the session API driven by the firmware's own socket loop and clock, as a
 * device with its own TCP stack would use it. Sends COUNT messages and waits for their
 * acknowledgements.
 *
 *   TETHER_CONNECTION_STRING=... [TETHER_CA_FILE=ca.pem] [TETHER_PORT=8883] own_socket [COUNT]
 *
 * Only the socket calls (getaddrinfo, connect, send, recv, poll) and the clock are the
 * firmware's; TLS and MQTT happen inside tether_session_*.
 */
#include "example_common.h"

#include <poll.h>
#include <time.h>

static uint64_t now_ms(void) { /* monotonic; the wall clock is the TLS config's */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void flush(tether_session *s, int fd) { /* send everything the session has queued */
    uint8_t buf[4096];
    size_t n = 0;
    do {
        check(tether_session_poll_output(s, buf, sizeof buf, &n), "output");
        if (n > 0 && send(fd, buf, n, 0) != (ssize_t)n) {
            tether_session_connection_lost(s);
            return;
        }
    } while (n > 0);
}

int main(int argc, char **argv) {
    const char *cs_text = getenv("TETHER_CONNECTION_STRING");
    const char *ca = getenv("TETHER_CA_FILE");
    const char *port = getenv("TETHER_PORT") ? getenv("TETHER_PORT") : "8883";
    int count = argc > 1 ? atoi(argv[1]) : 3, acked = 0, i, fd;
    tether_connection_string *cs = NULL;
    tether_tls_config_builder *builder = tether_tls_config_builder_new();
    tether_tls_config *tls = NULL;
    tether_session *s = NULL;
    tether_event event;
    char host[256];
    size_t len;

    /* 1. Create and configure. */
    if (cs_text == NULL) {
        fprintf(stderr, "set TETHER_CONNECTION_STRING\n");
        return 2;
    }
    check(tether_connection_string_parse(cs_text, &cs), "connection string");
    check(tether_connection_string_host_name(cs, host, sizeof host, &len), "host");
    tether_connection_string_free(cs);
    if (ca != NULL) check(tether_tls_config_builder_add_ca_file(builder, ca), "CA file");
    check(tether_tls_config_builder_build(builder, &tls), "TLS policy");
    tether_tls_config_builder_free(builder);
    check(tether_session_new(cs_text, tls, NULL, &s), "session");
    tether_tls_config_free(tls);

    /* 2. Connect: our TCP connection, then the session's TLS + MQTT on top. */
    fd = tcp_connect(host, port);
    if (fd < 0) {
        fprintf(stderr, "cannot connect to %s:%s\n", host, port);
        return 1;
    }
    check(tether_session_connect(s, now_ms()), "connect");

    /* 3. Queue the messages (sent once connected), then run the loop until all are acked. */
    for (i = 0; i < count; i++) {
        const char *body = "{\"source\":\"own socket\"}";
        check(tether_session_send_telemetry(s, (const uint8_t *)body, strlen(body), NULL, NULL, 0, 1,
                                            now_ms(), NULL),
              "send");
    }
    while (acked < count) {
        struct pollfd pfd = {fd, POLLIN, 0};
        uint64_t deadline = 0;
        int wait_ms = 1000;
        flush(s, fd);
        if (tether_session_next_deadline(s, &deadline) == TETHER_RESULT_OK)
            wait_ms = deadline > now_ms() ? (int)(deadline - now_ms()) : 0;
        if (poll(&pfd, 1, wait_ms > 1000 ? 1000 : wait_ms) > 0) {
            uint8_t buf[4096];
            ssize_t got = recv(fd, buf, sizeof buf, 0);
            if (got <= 0) tether_session_connection_lost(s);
            else tether_session_handle_input(s, buf, (size_t)got, now_ms());
        }
        tether_session_handle_timeout(s, now_ms());
        for (;;) {
            check(tether_session_poll_event(s, &event), "event");
            if (event.kind == TETHER_EVENT_NONE) break;
            if (event.kind == TETHER_EVENT_CONNECTED) printf("connected: %s\n", event.name);
            if (event.kind == TETHER_EVENT_TELEMETRY_ACKED) acked++;
            if (event.kind == TETHER_EVENT_DISCONNECTED) check(event.error, "connection");
        }
    }
    printf("acked %d\n", acked);

    /* 4. Disconnect: DISCONNECT and close_notify go out before the socket closes. */
    tether_session_disconnect(s, now_ms());
    flush(s, fd);
    close(fd);
    tether_session_free(s);
    return 0;
}
