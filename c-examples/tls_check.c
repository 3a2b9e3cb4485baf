/*
 * tls_check: connect to a server with the IoT Hub TLS policy through rustls-ffi, and print
 * the negotiated version and cipher suite.
 *
 *   usage: tls_check HOST PORT [CA_FILE]
 *
 * This is the "TLS only" way in: tether builds the policy (TLS 1.2, the hub's ECDHE suites,
 * the IoT Hub roots plus CA_FILE), rustls-ffi runs the connection over our own socket.
 */
#include <rustls.h> /* first: tether.h then declares tether_tls_config_rustls */

#include "example_common.h"

static void rustls_fail(const char *what, rustls_result r) {
    char msg[512];
    size_t len = 0;
    rustls_error((unsigned int)r, msg, sizeof msg - 1, &len);
    msg[len] = '\0';
    fprintf(stderr, "%s: %s\n", what, msg);
    exit(1);
}

/* rustls-ffi I/O callbacks over a socket file descriptor. */
static rustls_io_result read_cb(void *user, uint8_t *buf, size_t n, size_t *out_n) {
    ssize_t got = recv(*(int *)user, buf, n, 0);
    if (got < 0) return 1; /* EIO-like; rustls passes it back to us */
    *out_n = (size_t)got;
    return 0;
}

static rustls_io_result write_cb(void *user, const uint8_t *buf, size_t n, size_t *out_n) {
    ssize_t sent = send(*(int *)user, buf, n, 0);
    if (sent < 0) return 1;
    *out_n = (size_t)sent;
    return 0;
}

int main(int argc, char **argv) {
    tether_tls_config_builder *builder;
    tether_tls_config *config = NULL;
    const rustls_client_config *rconfig = NULL;
    struct rustls_connection *conn = NULL;
    rustls_result rr;
    rustls_str suite;
    size_t n;
    int fd;

    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [CA_FILE]\n", argv[0]);
        return 2;
    }

    /* 1. The policy: IoT Hub defaults, plus a test CA when given. */
    builder = tether_tls_config_builder_new();
    if (builder == NULL) check(TETHER_RESULT_PANIC, "builder");
    if (argc > 3) check(tether_tls_config_builder_add_ca_file(builder, argv[3]), "CA file");
    check(tether_tls_config_builder_build(builder, &config), "build");
    tether_tls_config_builder_free(builder);

    /* 2. Hand it to rustls-ffi. */
    check(tether_tls_config_rustls(config, &rconfig), "rustls bridge");
    tether_tls_config_free(config); /* rconfig keeps its own reference */
    if ((rr = rustls_client_connection_new(rconfig, argv[1], &conn)) != RUSTLS_RESULT_OK)
        rustls_fail("connection", rr);

    /* 3. Our own socket loop drives the handshake. */
    fd = tcp_connect(argv[1], argv[2]);
    if (fd < 0) {
        fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    while (rustls_connection_is_handshaking(conn)) {
        while (rustls_connection_wants_write(conn)) {
            if (rustls_connection_write_tls(conn, write_cb, &fd, &n) != 0) {
                fprintf(stderr, "send failed\n");
                return 1;
            }
        }
        if (!rustls_connection_is_handshaking(conn)) break;
        if (rustls_connection_read_tls(conn, read_cb, &fd, &n) != 0 || n == 0) {
            fprintf(stderr, "server closed the connection during the handshake\n");
            return 1;
        }
        if ((rr = rustls_connection_process_new_packets(conn)) != RUSTLS_RESULT_OK) {
            rustls_connection_write_tls(conn, write_cb, &fd, &n); /* send our alert */
            rustls_fail("handshake", rr);
        }
    }
    while (rustls_connection_wants_write(conn))
        rustls_connection_write_tls(conn, write_cb, &fd, &n);

    /* 4. What was negotiated. */
    suite = rustls_connection_get_negotiated_ciphersuite_name(conn);
    printf("%s %.*s\n",
           rustls_connection_get_protocol_version(conn) == 0x0303 ? "TLSv1.2" : "TLSv1.3",
           (int)suite.len, suite.data);

    rustls_connection_send_close_notify(conn);
    rustls_connection_write_tls(conn, write_cb, &fd, &n);
    rustls_connection_free(conn);
    rustls_client_config_free(rconfig);
    close(fd);
    return 0;
}
