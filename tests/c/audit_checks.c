/* tether_audit_client_hello from C: OpenSSL writes its own ClientHello into a memory BIO
 * (as a legacy stack would), and tether says whether IoT Hub will accept it. Also the ABI
 * contract: NULL arguments, size query, BUFFER_TOO_SMALL writing nothing, garbage input.
 * Prints one "verdict NAME: N" line per hello and "N passed, M failed". */
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include <tether.h>

static int passed, failed;

static void expect(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAILED: %s\n", what);
    }
}

/* The ClientHello OpenSSL sends with this version range and cipher list. */
static size_t openssl_hello(int min, int max, const char *ciphers, unsigned char *out, size_t cap) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    if (ciphers) SSL_CTX_set_cipher_list(ctx, ciphers);
    SSL *ssl = SSL_new(ctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_tlsext_host_name(ssl, "myhub.azure-devices.net");
    SSL_connect(ssl); /* wants to read the ServerHello: the hello is in wbio */
    int n = BIO_read(wbio, out, (int)cap);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return n > 0 ? (size_t)n : 0;
}

static const char *verdict_name(tether_audit_verdict v) {
    switch (v) {
    case TETHER_AUDIT_VERDICT_OK: return "ok";
    case TETHER_AUDIT_VERDICT_OK_WITH_WARNINGS: return "ok-with-warnings";
    case TETHER_AUDIT_VERDICT_WILL_FAIL: return "will-fail";
    }
    return "?";
}

static void audit(const char *label, const unsigned char *hello, size_t len,
                  tether_audit_verdict want, const char *want_text) {
    tether_audit_verdict verdict = TETHER_AUDIT_VERDICT_OK;
    size_t needed = 0, written = 0;
    /* size query, then the report */
    tether_result r = tether_audit_client_hello(hello, len, &verdict, NULL, 0, &needed);
    expect(r == TETHER_RESULT_BUFFER_TOO_SMALL && needed > 0, "size query");
    char report[8192];
    memset(report, 'x', sizeof report);
    r = tether_audit_client_hello(hello, len, &verdict, report, needed, &written);
    expect(r == TETHER_RESULT_BUFFER_TOO_SMALL && report[0] == 'x' && written == needed,
           "one byte short: nothing written, size needed reported");
    r = tether_audit_client_hello(hello, len, &verdict, report, sizeof report, &written);
    expect(r == TETHER_RESULT_OK && written == needed && strlen(report) == written, "report");
    expect(verdict == want, label);
    expect(strstr(report, want_text) != NULL, want_text);
    printf("verdict %s: %s\n", label, verdict_name(verdict));
    printf("report %s: %s\n", label, report);
}

int main(void) {
    unsigned char hello[4096];
    size_t n;

    n = openssl_hello(TLS1_2_VERSION, TLS1_2_VERSION,
                      "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384", hello, sizeof hello);
    audit("tls12-gcm", hello, n, TETHER_AUDIT_VERDICT_OK, "\"class\":\"preferred\"");

    n = openssl_hello(TLS1_VERSION, TLS1_1_VERSION, "DEFAULT", hello, sizeof hello);
    audit("tls11", hello, n, TETHER_AUDIT_VERDICT_WILL_FAIL,
          "offers TLS 1.1 at most; IoT Hub requires TLS 1.2");

    n = openssl_hello(TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-RSA-AES128-SHA256", hello, sizeof hello);
    audit("cbc-sha256", hello, n, TETHER_AUDIT_VERDICT_OK_WITH_WARNINGS, "\"id\":\"cbc-only\"");

    /* Contract: NULL arguments, garbage, truncated; outputs untouched on failure. */
    tether_audit_verdict verdict = TETHER_AUDIT_VERDICT_WILL_FAIL;
    char report[64] = "untouched";
    size_t len = 42;
    expect(tether_audit_client_hello(NULL, 5, &verdict, report, sizeof report, &len) ==
               TETHER_RESULT_NULL_ARGUMENT, "NULL hello");
    expect(tether_audit_client_hello(hello, n, NULL, report, sizeof report, &len) ==
               TETHER_RESULT_NULL_ARGUMENT, "NULL verdict_out");
    expect(tether_audit_client_hello(hello, n, &verdict, report, sizeof report, NULL) ==
               TETHER_RESULT_NULL_ARGUMENT, "NULL report_len");
    expect(tether_audit_client_hello(hello, n, &verdict, NULL, 10, &len) ==
               TETHER_RESULT_NULL_ARGUMENT, "NULL report with a capacity");
    expect(tether_audit_client_hello(hello, n / 2, &verdict, report, sizeof report, &len) ==
               TETHER_RESULT_INVALID_ARGUMENT, "truncated hello");
    char message[256];
    size_t mlen = 0;
    expect(tether_last_error(message, sizeof message, &mlen) == TETHER_RESULT_OK &&
               strstr(message, "truncated") != NULL, "truncated is named");
    const unsigned char garbage[] = "GET / HTTP/1.1\r\n";
    expect(tether_audit_client_hello(garbage, sizeof garbage - 1, &verdict, report, sizeof report,
                                     &len) == TETHER_RESULT_INVALID_ARGUMENT, "garbage");
    const unsigned char sslv2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15};
    expect(tether_audit_client_hello(sslv2, sizeof sslv2, &verdict, report, sizeof report, &len) ==
               TETHER_RESULT_INVALID_ARGUMENT, "sslv2");
    expect(tether_last_error(message, sizeof message, &mlen) == TETHER_RESULT_OK &&
               strstr(message, "SSLv2-format") != NULL, "sslv2 is named");
    expect(tether_audit_client_hello(hello, n, &verdict, (char *)hello + 4, 64, &len) ==
               TETHER_RESULT_INVALID_ARGUMENT, "overlapping buffers");
    expect(verdict == TETHER_AUDIT_VERDICT_WILL_FAIL && len == 42 &&
               strcmp(report, "untouched") == 0, "outputs untouched on failure");

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
