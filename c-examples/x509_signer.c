/*
 * x509_signer: mutual TLS where the device's private key never enters tether.
 *
 * A signing callback stands in for a secure element: here it is OpenSSL holding the key
 * file; on a device it would be a TPM, an HSM or a secure element driver. tether hands the
 * callback a digest and a scheme, and gets back a signature. For ECDSA the callback shows
 * what to do with a secure element that returns raw r||s: convert it with
 * tether_ecdsa_raw_to_der.
 *
 *   x509_signer HOST PORT CA_FILE CERT_FILE KEY_FILE
 *
 * Prints "OK <TLS version> <suite>" and exits 0 on success; prints the result name and
 * tether_last_error() and exits 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <tether.h>

/* The "secure element": a key the library never sees. */
struct secure_element {
    EVP_PKEY *key;
    int calls;
};

static int sign_cb(void *user, uint16_t scheme, const uint8_t *digest, size_t digest_len,
                   uint8_t *sig, size_t sig_cap, size_t *sig_len) {
    struct secure_element *se = user;
    const EVP_MD *md = digest_len == 48 ? EVP_sha384() : EVP_sha256();
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(se->key, NULL);
    uint8_t der[160];
    size_t len = sizeof der;
    int ok = ctx && EVP_PKEY_sign_init(ctx) > 0 && EVP_PKEY_CTX_set_signature_md(ctx, md) > 0;
    se->calls++;
    if (ok && (scheme == TETHER_SIGN_RSA_PSS_SHA256 || scheme == TETHER_SIGN_RSA_PSS_SHA384)) {
        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) > 0;
    } else if (ok && (scheme == TETHER_SIGN_RSA_PKCS1_SHA256 ||
                      scheme == TETHER_SIGN_RSA_PKCS1_SHA384)) {
        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0;
    }
    if (scheme == TETHER_SIGN_ECDSA_P256_SHA256 || scheme == TETHER_SIGN_ECDSA_P384_SHA384) {
        /* Sign, then behave like a secure element that returns raw r||s ... */
        uint8_t raw[96];
        size_t half = scheme == TETHER_SIGN_ECDSA_P256_SHA256 ? 32 : 48;
        const unsigned char *p = der;
        ECDSA_SIG *ecdsa = NULL;
        ok = ok && EVP_PKEY_sign(ctx, der, &len, digest, digest_len) > 0 &&
             (ecdsa = d2i_ECDSA_SIG(NULL, &p, (long)len)) != NULL &&
             BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa), raw, (int)half) == (int)half &&
             BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa), raw + half, (int)half) == (int)half;
        ECDSA_SIG_free(ecdsa);
        /* ... which tether turns into the DER that TLS needs. */
        ok = ok && tether_ecdsa_raw_to_der(raw, 2 * half, sig, sig_cap, sig_len) ==
                       TETHER_RESULT_OK;
    } else {
        len = sig_cap;
        ok = ok && EVP_PKEY_sign(ctx, sig, &len, digest, digest_len) > 0;
        *sig_len = len;
    }
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size)) != NULL) {
        *len = fread(buf, 1, (size_t)size, f);
    }
    fclose(f);
    return buf;
}

static int fail(const char *what, tether_result r) {
    char msg[512];
    size_t len = 0;
    if (tether_last_error(msg, sizeof msg, &len) != TETHER_RESULT_OK) msg[0] = '\0';
    printf("%s: %s: %s\n", what, tether_result_name((uint32_t)r), msg);
    return 1;
}

int main(int argc, char **argv) {
    struct secure_element se = {NULL, 0};
    tether_tls_config_builder *builder;
    tether_tls_config *config = NULL;
    unsigned char *chain;
    size_t chain_len = 0, report_len = 0;
    char report[128];
    tether_result r;
    FILE *keyfile;

    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CA_FILE CERT_FILE KEY_FILE\n", argv[0]);
        return 2;
    }
    keyfile = fopen(argv[5], "r");
    se.key = keyfile ? PEM_read_PrivateKey(keyfile, NULL, NULL, NULL) : NULL;
    if (keyfile) fclose(keyfile);
    chain = read_file(argv[4], &chain_len);
    if (!se.key || !chain) {
        fprintf(stderr, "cannot read %s or %s\n", argv[4], argv[5]);
        return 2;
    }

    builder = tether_tls_config_builder_new();
    r = tether_tls_config_builder_add_ca_file(builder, argv[3]);
    if (r != TETHER_RESULT_OK) return fail("add_ca_file", r);
    /* The chain is copied; the key stays in the "secure element". */
    r = tether_tls_config_builder_set_client_signer(builder, chain, chain_len, sign_cb, &se);
    free(chain);
    if (r != TETHER_RESULT_OK) return fail("set_client_signer", r);
    r = tether_tls_config_builder_build(builder, &config);
    tether_tls_config_builder_free(builder);
    if (r != TETHER_RESULT_OK) return fail("build", r);

    r = tether_tls_config_check(config, argv[1], (uint16_t)atoi(argv[2]), 10000, report,
                                sizeof report, &report_len);
    tether_tls_config_free(config);
    if (r != TETHER_RESULT_OK) return fail("check", r);
    printf("OK %s (signer called %d times)\n", report, se.calls);
    EVP_PKEY_free(se.key);
    return 0;
}
