/*
 * The C ABI's contract, checked from C: NULL handling, UTF-8 checks, buffer sizes, last
 * error, handle accounting, and a handshake through tether_tls_config_check.
 *
 *   usage: abi_checks PORT CA_FILE    (an s_server with the test PKI listens on PORT)
 *
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#include <tether.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                    \
    } while (0)

static const char *last_error(void) {
    static char buf[1024];
    size_t len = 0;
    if (tether_last_error(buf, sizeof buf, &len) != TETHER_RESULT_OK) return "";
    return buf;
}

int main(int argc, char **argv) {
    tether_tls_config_builder *b;
    tether_tls_config *config = NULL;
    char small[8];
    char report[128];
    size_t len = 12345;
    size_t live_before = tether_live_handles();
    const char bad_utf8[] = {'/', 't', (char)0xff, 'x', 0};
    tether_result r;

    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT CA_FILE\n", argv[0]);
        return 2;
    }

    CHECK(strcmp(tether_version(), TETHER_VERSION_STRING) == 0);
    CHECK(strcmp(tether_result_name(TETHER_RESULT_CERT_EXPIRED), "TETHER_RESULT_CERT_EXPIRED") == 0);
    CHECK(strcmp(tether_result_name(9999), "TETHER_RESULT_UNKNOWN") == 0);

    /* NULL handles and arguments are refused with a message naming the argument. */
    CHECK(tether_tls_config_builder_enable_tls13(NULL, true) == TETHER_RESULT_NULL_ARGUMENT);
    CHECK(strcmp(last_error(), "`builder` is NULL") == 0);
    CHECK(tether_tls_config_builder_build(NULL, &config) == TETHER_RESULT_NULL_ARGUMENT);
    CHECK(config == NULL);
    tether_tls_config_builder_free(NULL);
    tether_tls_config_free(NULL);

    b = tether_tls_config_builder_new();
    CHECK(b != NULL);
    CHECK(tether_live_handles() == live_before + 1);
    CHECK(tether_tls_config_builder_add_ca_file(b, NULL) == TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_tls_config_builder_add_ca_file(b, bad_utf8) == TETHER_RESULT_INVALID_UTF8);
    CHECK(tether_tls_config_builder_add_ca_file(b, "/nonexistent/ca.pem") == TETHER_RESULT_FILE_NOT_READABLE);
    CHECK(strstr(last_error(), "/nonexistent/ca.pem") != NULL);
    CHECK(tether_tls_config_builder_add_ca(b, (const uint8_t *)"junk", 4) == TETHER_RESULT_CERT_MALFORMED);
    CHECK(tether_tls_config_builder_add_ca(b, NULL, 10) == TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_tls_config_builder_set_embedded_roots(b, 0x80) == TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(tether_tls_config_builder_set_client_cert(b, (const uint8_t *)"x", 1, (const uint8_t *)"y", 1) ==
          TETHER_RESULT_CERT_MALFORMED);
    CHECK(tether_tls_config_builder_build(b, NULL) == TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_tls_config_builder_add_ca_file(b, argv[2]) == TETHER_RESULT_OK);
    CHECK(tether_tls_config_builder_build(b, &config) == TETHER_RESULT_OK);
    CHECK(config != NULL);
    tether_tls_config_builder_free(b);

    /* Argument checks of the handshake call. */
    CHECK(tether_tls_config_check(config, "localhost", 0, 1000, report, sizeof report, &len) ==
          TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(tether_tls_config_check(config, NULL, 1, 1000, report, sizeof report, &len) ==
          TETHER_RESULT_NULL_ARGUMENT);

    /* A too-small buffer: nothing written, the size needed reported. The handshake itself
       succeeded, so this uses the s_server's one connection. */
    memset(small, 'x', sizeof small);
    r = tether_tls_config_check(config, "localhost", (uint16_t)atoi(argv[1]), 5000, small, sizeof small, &len);
    CHECK(r == TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == strlen("TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
    CHECK(small[0] == 'x' && small[7] == 'x');
    (void)report;

    /* The last error can be sized first, then read. */
    CHECK(tether_last_error(NULL, 0, &len) == TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len > 0);

    tether_tls_config_free(config);
    CHECK(tether_live_handles() == live_before);

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
