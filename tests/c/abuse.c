/*
 * The C ABI abuse harness: every exported tether_* function called with NULL pointers,
 * invalid UTF-8, size queries, short, exact and overlapping buffers, and random content.
 * Run under valgrind by tests/abuse.rs (zero errors, zero definite leaks required).
 *
 *   usage: abuse PKI_DIR ROOT_DER [SEED]
 *
 * Every call goes through X(fn), which records the function as exercised; at the end each
 * one is printed as "exercised NAME", so the Rust test can compare them with the library's
 * exports. Prints "N checks, N failed" and exits non-zero on any failure. Any call that
 * returns TETHER_RESULT_PANIC is a failure.
 */
#include <rustls.h>
#include <tether.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;
static const char *seen[512];
static int nseen;

static void mark(const char *name) {
    int i;
    for (i = 0; i < nseen; i++)
        if (strcmp(seen[i], name) == 0) return;
    if (nseen < 512) seen[nseen++] = name;
}

/* Calls `fn` and records it as exercised. */
#define X(fn) (mark(#fn), fn)

static void fail_line(int line, const char *what, const char *detail) {
    char msg[512];
    size_t len = 0;
    failures++;
    if (tether_last_error(msg, sizeof msg, &len) != TETHER_RESULT_OK) msg[0] = 0;
    printf("FAIL line %d: %s: %s (last error: %s)\n", line, what, detail, msg);
}

static void expect_code(enum tether_result got, enum tether_result want, const char *what,
                        int line) {
    checks++;
    if (got != want) {
        char detail[160];
        snprintf(detail, sizeof detail, "got %s, want %s", tether_result_name(got),
                 tether_result_name(want));
        fail_line(line, what, detail);
    }
}
#define EXPECT(call, want) expect_code((call), (want), #call, __LINE__)

static void expect_true(int cond, const char *what, int line) {
    checks++;
    if (!cond) fail_line(line, what, "false");
}
#define CHECK(cond) expect_true((cond) != 0, #cond, __LINE__)

static void no_panic(enum tether_result got, const char *what, int line) {
    checks++;
    if (got == TETHER_RESULT_PANIC) fail_line(line, what, "TETHER_RESULT_PANIC");
}
#define NO_PANIC(call) no_panic((call), #call, __LINE__)

/* xorshift64*: reproducible random content. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Random bytes; with `text`, NUL-terminated with no NUL inside (often valid ASCII, sometimes
 * not UTF-8). Returns the length. */
static size_t random_fill(uint8_t *buf, size_t cap, int text) {
    size_t len = (size_t)(rnd() % (cap - 1)), i;
    const char *alphabet = "$iothub/twin/res/200/?$rid=1&%24.ct=a%2Fb devices/d/messages/"
                           "devicebound/#+;=HostName=SharedAccessKey=\"{}:,[]0123456789";
    for (i = 0; i < len; i++) {
        uint64_t r = rnd();
        buf[i] = (r & 3) ? (uint8_t)alphabet[(r >> 8) % strlen(alphabet)] : (uint8_t)(r >> 16);
        if (text && buf[i] == 0) buf[i] = 'x';
    }
    buf[len] = 0;
    return len;
}

/* An aligned scratch area for overlap cases (size_t outputs placed inside byte buffers). */
static size_t arena_words[1024];
#define ARENA ((char *)arena_words)

/* ---- text outputs: (in, out, cap, out_len) ------------------------------------------- */

typedef enum tether_result (*text_fn)(const char *in, char *out, size_t cap, size_t *len);

enum { IN_REQUIRED = 1, IN_UTF8 = 2, IN_RANDOM = 4 };

static void check_text_output(const char *name, text_fn fn, const char *good, int flags) {
    char buf[4096];
    size_t needed = 0, len = 0, i;
    int untouched = 1;
    printf("text output: %s\n", name);
    /* size query */
    EXPECT(fn(good, NULL, 0, &needed), TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(needed > 0 && needed < sizeof buf - 1);
    EXPECT(fn(good, buf, sizeof buf, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(fn(good, NULL, 8, &len), TETHER_RESULT_NULL_ARGUMENT);
    /* short by one (no room for the NUL): nothing written, the size needed reported */
    memset(buf, 0x5a, sizeof buf);
    len = 0;
    EXPECT(fn(good, buf, needed, &len), TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == needed);
    for (i = 0; i < sizeof buf; i++) untouched &= buf[i] == 0x5a;
    CHECK(untouched);
    /* exact */
    EXPECT(fn(good, buf, needed + 1, &len), TETHER_RESULT_OK);
    CHECK(len == needed && buf[needed] == 0 && strlen(buf) == needed);
    CHECK((unsigned char)buf[needed + 1] == 0x5a);
    /* out_len inside out */
    EXPECT(fn(good, ARENA, 1024, (size_t *)(ARENA + 64)), TETHER_RESULT_INVALID_ARGUMENT);
    /* out overlapping the input */
    if (good != NULL) {
        strcpy(ARENA, good);
        EXPECT(fn(ARENA, ARENA + 1, 1024, &len), TETHER_RESULT_INVALID_ARGUMENT);
        CHECK(strcmp(ARENA, good) == 0);
    }
    if (flags & IN_REQUIRED) EXPECT(fn(NULL, buf, sizeof buf, &len), TETHER_RESULT_NULL_ARGUMENT);
    if (flags & IN_UTF8) EXPECT(fn("ab\xff\xfe", buf, sizeof buf, &len), TETHER_RESULT_INVALID_UTF8);
    if (flags & IN_RANDOM) {
        for (i = 0; i < 300; i++) {
            uint8_t in[96];
            size_t cap = (size_t)(rnd() % 80);
            random_fill(in, sizeof in, 1);
            NO_PANIC(fn((const char *)in, buf, cap, &len));
        }
    }
}

/* ---- byte outputs: (in, in_len, out, cap, out_len) -------------------------------------- */

typedef enum tether_result (*bytes_fn)(const uint8_t *in, size_t in_len, uint8_t *out,
                                       size_t cap, size_t *len);

static void check_bytes_output(const char *name, bytes_fn fn, const uint8_t *good, size_t good_len) {
    uint8_t buf[4096];
    size_t needed = 0, len = 0, i;
    int untouched = 1;
    printf("byte output: %s\n", name);
    EXPECT(fn(good, good_len, NULL, 0, &needed), TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(needed > 0 && needed < sizeof buf);
    EXPECT(fn(good, good_len, buf, sizeof buf, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(fn(good, good_len, NULL, 8, &len), TETHER_RESULT_NULL_ARGUMENT);
    memset(buf, 0x5a, sizeof buf);
    EXPECT(fn(good, good_len, buf, needed - 1, &len), TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == needed);
    for (i = 0; i < sizeof buf; i++) untouched &= buf[i] == 0x5a;
    CHECK(untouched);
    EXPECT(fn(good, good_len, buf, needed, &len), TETHER_RESULT_OK);
    CHECK(len == needed && buf[needed] == 0x5a);
    EXPECT(fn(good, good_len, (uint8_t *)ARENA, 1024, (size_t *)(ARENA + 64)),
           TETHER_RESULT_INVALID_ARGUMENT);
    if (good_len > 0) {
        memcpy(ARENA, good, good_len);
        EXPECT(fn((const uint8_t *)ARENA, good_len, (uint8_t *)ARENA + 1, 1024, &len),
               TETHER_RESULT_INVALID_ARGUMENT);
        CHECK(memcmp(ARENA, good, good_len) == 0);
        EXPECT(fn(NULL, good_len, buf, sizeof buf, &len), TETHER_RESULT_NULL_ARGUMENT);
    }
    for (i = 0; i < 300; i++) {
        uint8_t in[160];
        size_t in_len = random_fill(in, sizeof in, 0);
        NO_PANIC(fn(in, in_len, buf, (size_t)(rnd() % 200), &len));
    }
}

/* ---- struct outputs: (in, in_len, out) ------------------------------------------------ */

typedef enum tether_result (*parse_fn)(const uint8_t *in, size_t in_len, void *out);

static void check_parser(const char *name, parse_fn fn, const uint8_t *good, size_t good_len,
                         enum tether_result good_result) {
    size_t i;
    union {
        tether_c2d_topic c2d;
        tether_twin_topic twin;
        tether_method_request method;
        tether_dps_response dps;
        tether_dps_body body;
        tether_mqtt_packet packet;
        tether_property property;
    } out;
    printf("parser: %s\n", name);
    EXPECT(fn(good, good_len, &out), good_result);
    EXPECT(fn(good, good_len, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(fn(NULL, good_len, &out), TETHER_RESULT_NULL_ARGUMENT);
    /* the output struct overlapping the input */
    memcpy(ARENA, good, good_len);
    EXPECT(fn((const uint8_t *)ARENA, good_len, ARENA + 8), TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(memcmp(ARENA, good, good_len) == 0);
    for (i = 0; i < 500; i++) {
        uint8_t in[200];
        size_t in_len = random_fill(in, sizeof in, 0);
        NO_PANIC(fn(in, in_len, &out));
    }
}

/* ---- adapters ------------------------------------------------------------------------ */

static const char *KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
static const char *CS = "HostName=localhost;DeviceId=dev-1;SharedAccessKey="
                        "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=;GatewayHostName=gw;"
                        "SharedAccessKeyName=owner";
static tether_connection_string *the_cs;
static uint8_t *root_der;
static size_t root_der_len;

static enum tether_result a_sas_token(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_sas_token)("localhost/devices/dev-1", in, NULL, 2000000000u, o, c, l);
}
static enum tether_result a_sas_token_resource(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_sas_token)(in, KEY, "owner", 2000000000u, o, c, l);
}
static enum tether_result a_derive_key(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_derive_key)(KEY, in, o, c, l);
}
static enum tether_result a_dps_client_id(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_client_id)(in, o, c, l);
}
static enum tether_result a_dps_username(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_username)("0ne00abc123", in, NULL, NULL, o, c, l);
}
static enum tether_result a_dps_register_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_register_topic)(in, o, c, l);
}
static enum tether_result a_dps_poll_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_poll_topic)("7", in, in ? strlen(in) : 4, o, c, l);
}
static enum tether_result a_dps_register_payload(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_dps_register_payload)(in, o, c, l);
}
static enum tether_result a_mqtt_client_id(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_mqtt_client_id)(in, "mod-1", o, c, l);
}
static enum tether_result a_mqtt_username(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_mqtt_username)("hub.azure-devices.net", in, NULL, NULL, "tether/abuse",
                                   "dtmi:x:y;1", o, c, l);
}
static enum tether_result a_telemetry_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_telemetry_topic)("dev-1", NULL, in, in ? strlen(in) : 3, o, c, l);
}
static enum tether_result a_c2d_subscribe_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_c2d_subscribe_topic)(in, o, c, l);
}
static enum tether_result a_twin_get_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_twin_get_topic)(in, o, c, l);
}
static enum tether_result a_twin_patch_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_twin_patch_reported_topic)(in, o, c, l);
}
static enum tether_result a_method_response_topic(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_method_response_topic)(200, in, in ? strlen(in) : 2, o, c, l);
}
static enum tether_result a_property_decode(const char *in, char *o, size_t c, size_t *l) {
    return X(tether_property_decode)(in, in ? strlen(in) : 2, o, c, l);
}
static enum tether_result a_thumbprint(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_x509_thumbprint)(root_der, root_der_len, TETHER_THUMBPRINT_SHA256, o, c, l);
}
static enum tether_result a_cs_host(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_connection_string_host_name)(the_cs, o, c, l);
}
static enum tether_result a_cs_device(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_connection_string_device_id)(the_cs, o, c, l);
}
static enum tether_result a_cs_gateway(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_connection_string_gateway_host_name)(the_cs, o, c, l);
}
static enum tether_result a_cs_key_name(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_connection_string_key_name)(the_cs, o, c, l);
}
static enum tether_result a_cs_sas_token(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_connection_string_sas_token)(the_cs, 1800000000u, 3600, o, c, l);
}
static enum tether_result a_last_error(const char *in, char *o, size_t c, size_t *l) {
    (void)in;
    return X(tether_last_error)(o, c, l);
}

static enum tether_result b_puback(const uint8_t *in, size_t n, uint8_t *o, size_t c, size_t *l) {
    (void)in;
    (void)n;
    return X(tether_mqtt_encode_puback)(7, o, c, l);
}
static enum tether_result b_pingreq(const uint8_t *in, size_t n, uint8_t *o, size_t c, size_t *l) {
    (void)in;
    (void)n;
    return X(tether_mqtt_encode_pingreq)(o, c, l);
}
static enum tether_result b_disconnect(const uint8_t *in, size_t n, uint8_t *o, size_t c,
                                       size_t *l) {
    (void)in;
    (void)n;
    return X(tether_mqtt_encode_disconnect)(o, c, l);
}
static enum tether_result b_publish(const uint8_t *in, size_t n, uint8_t *o, size_t c, size_t *l) {
    return X(tether_mqtt_encode_publish)("devices/dev-1/messages/events/", in, n, 1, 3, false, o,
                                         c, l);
}
static enum tether_result b_subscribe(const uint8_t *in, size_t n, uint8_t *o, size_t c,
                                      size_t *l) {
    const char *filters[2] = {"$iothub/twin/res/#", "$iothub/methods/POST/#"};
    (void)n;
    return X(tether_mqtt_encode_subscribe)(9, filters, in, 2, o, c, l);
}
static enum tether_result b_unsubscribe(const uint8_t *in, size_t n, uint8_t *o, size_t c,
                                        size_t *l) {
    const char *filters[1] = {"$iothub/twin/res/#"};
    (void)in;
    (void)n;
    return X(tether_mqtt_encode_unsubscribe)(9, filters, 1, o, c, l);
}
static enum tether_result b_connect(const uint8_t *in, size_t n, uint8_t *o, size_t c, size_t *l) {
    tether_mqtt_connect_options opts;
    memset(&opts, 0, sizeof opts);
    opts.client_id = "dev-1";
    opts.username = "hub/dev-1/?api-version=2021-04-12";
    opts.password = "SharedAccessSignature sr=x&sig=y&se=1";
    opts.keep_alive_s = 60;
    opts.clean_session = true;
    opts.will_topic = n > 0 ? "devices/dev-1/messages/events/" : NULL;
    opts.will_payload = in;
    opts.will_payload_len = n;
    return X(tether_mqtt_encode_connect)(&opts, o, c, l);
}
static enum tether_result b_raw_to_der(const uint8_t *in, size_t n, uint8_t *o, size_t c,
                                       size_t *l) {
    return X(tether_ecdsa_raw_to_der)(in, n, o, c, l);
}

static enum tether_result p_c2d(const uint8_t *in, size_t n, void *out) {
    return X(tether_c2d_parse_topic)((const char *)in, n, out);
}
static enum tether_result p_twin(const uint8_t *in, size_t n, void *out) {
    return X(tether_twin_parse_topic)((const char *)in, n, out);
}
static enum tether_result p_method(const uint8_t *in, size_t n, void *out) {
    return X(tether_method_parse_request_topic)((const char *)in, n, out);
}
static enum tether_result p_dps_topic(const uint8_t *in, size_t n, void *out) {
    return X(tether_dps_parse_response_topic)((const char *)in, n, out);
}
static enum tether_result p_dps_body(const uint8_t *in, size_t n, void *out) {
    return X(tether_dps_parse_body)(in, n, out);
}
static enum tether_result p_decode(const uint8_t *in, size_t n, void *out) {
    size_t consumed = 0, needed = 0;
    return X(tether_mqtt_decode)(in, n, TETHER_MQTT_DEFAULT_MAX_PACKET_SIZE, out, &consumed,
                                 &needed);
}
static enum tether_result p_bag_find(const uint8_t *in, size_t n, void *out) {
    return X(tether_property_bag_find)((const char *)in, n, "$.ct", out);
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long n;
    if (f == NULL) {
        printf("cannot read %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    if (fread(data, 1, (size_t)n, f) != (size_t)n) exit(2);
    fclose(f);
    data[n] = 0;
    *len = (size_t)n;
    return data;
}

static int sign_calls;
static int signer(void *user, uint16_t scheme, const uint8_t *digest, size_t digest_len,
                  uint8_t *sig, size_t cap, size_t *sig_len) {
    (void)user;
    (void)scheme;
    (void)digest;
    (void)digest_len;
    (void)sig;
    (void)cap;
    (void)sig_len;
    sign_calls++;
    return -1;
}

static void on_log(void *user, uint32_t level, const char *message, size_t len) {
    (void)level;
    (void)message;
    (void)len;
    (*(int *)user)++;
}

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- handles ----------------------------------------------------------------------- */

static void connection_strings(void) {
    tether_connection_string *cs = NULL;
    char buf[256];
    size_t len;
    printf("connection strings\n");
    EXPECT(X(tether_connection_string_parse)(NULL, &cs), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_parse)(CS, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_parse)("HostName=h\xff;DeviceId=d", &cs),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_connection_string_parse)("HostName=h;DeviceId=d;SharedAccessKey=a;x", &cs),
           TETHER_RESULT_CONNECTION_STRING_INVALID);
    CHECK(cs == NULL);
    /* the output pointer inside the text */
    strcpy(ARENA, CS);
    EXPECT(X(tether_connection_string_parse)(ARENA, (tether_connection_string **)(ARENA + 8)),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_connection_string_parse)(CS, &the_cs), TETHER_RESULT_OK);
    check_text_output("tether_connection_string_host_name", a_cs_host, NULL, 0);
    check_text_output("tether_connection_string_device_id", a_cs_device, NULL, 0);
    check_text_output("tether_connection_string_gateway_host_name", a_cs_gateway, NULL, 0);
    check_text_output("tether_connection_string_key_name", a_cs_key_name, NULL, 0);
    check_text_output("tether_connection_string_sas_token", a_cs_sas_token, NULL, 0);
    EXPECT(X(tether_connection_string_module_id)(the_cs, buf, sizeof buf, &len),
           TETHER_RESULT_NOT_FOUND);
    EXPECT(X(tether_connection_string_module_id)(NULL, buf, sizeof buf, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_module_id)(the_cs, buf, sizeof buf, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_module_id)(the_cs, NULL, 9, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    /* extreme clocks and lifetimes */
    NO_PANIC(tether_connection_string_sas_token(the_cs, UINT64_MAX, UINT64_MAX, buf, sizeof buf, &len));
    NO_PANIC(tether_connection_string_sas_token(the_cs, 0, 0, buf, sizeof buf, &len));
    NO_PANIC(tether_sas_token("h/devices/d", KEY, NULL, UINT64_MAX, buf, sizeof buf, &len));
    CHECK(X(tether_connection_string_auth)(the_cs) == TETHER_AUTH_SAS_KEY);
    CHECK(X(tether_connection_string_auth)(NULL) == 0);
    EXPECT(X(tether_connection_string_set_secondary_key)(the_cs, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_set_secondary_key)(NULL, KEY), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_set_secondary_key)(the_cs, "\xff\xfe"),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_connection_string_set_secondary_key)(the_cs, "not base64!"),
           TETHER_RESULT_SAS_KEY_INVALID);
    EXPECT(X(tether_connection_string_set_secondary_key)(the_cs, KEY), TETHER_RESULT_OK);
    EXPECT(X(tether_connection_string_use_key)(the_cs, 7), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_connection_string_use_key)(NULL, TETHER_KEY_SECONDARY),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_connection_string_use_key)(the_cs, TETHER_KEY_SECONDARY), TETHER_RESULT_OK);
    CHECK(X(tether_connection_string_key_in_use)(the_cs) == TETHER_KEY_SECONDARY);
    (void)X(tether_connection_string_key_in_use)(NULL);
    {
        int i;
        for (i = 0; i < 300; i++) {
            uint8_t text[200];
            random_fill(text, sizeof text, 1);
            cs = NULL;
            NO_PANIC(X(tether_connection_string_parse)((const char *)text, &cs));
            X(tether_connection_string_free)(cs);
        }
    }
    X(tether_connection_string_free)(NULL);
}

static tether_tls_config *tls_configs(const char *pki) {
    tether_tls_config_builder *b = X(tether_tls_config_builder_new)();
    tether_tls_config *config = NULL;
    const rustls_client_config *rc = NULL;
    char ca[512], cert[512], key[512], key_der[512], report[128];
    uint8_t *chain, *key_bytes;
    size_t chain_len, key_len, len;
    path_in(ca, sizeof ca, pki, "ca.pem");
    path_in(cert, sizeof cert, pki, "device.pem");
    path_in(key, sizeof key, pki, "device.key");
    path_in(key_der, sizeof key_der, pki, "device.key.der");
    printf("tls configuration\n");
    EXPECT(X(tether_tls_config_builder_enable_tls13)(NULL, true), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_enable_tls13)(b, false), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_set_embedded_roots)(NULL, 0), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_embedded_roots)(b, 99), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_embedded_roots)(b, TETHER_ROOTS_RSA), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_enable_ecdsa_suites)(NULL, true), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_enable_ecdsa_suites)(b, false), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_add_ca)(b, NULL, 10), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_add_ca)(NULL, root_der, root_der_len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_add_ca)(b, root_der, 10), TETHER_RESULT_CERT_MALFORMED);
    EXPECT(X(tether_tls_config_builder_add_ca)(b, root_der, root_der_len), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_add_ca_file)(b, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_add_ca_file)(b, "/nonexistent\xff"), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_tls_config_builder_add_ca_file)(b, "/nonexistent/ca.pem"),
           TETHER_RESULT_FILE_NOT_READABLE);
    EXPECT(X(tether_tls_config_builder_add_ca_file)(b, ca), TETHER_RESULT_OK);
    chain = read_file(cert, &chain_len);
    key_bytes = read_file(key_der, &key_len);
    EXPECT(X(tether_tls_config_builder_set_client_cert)(b, chain, chain_len, NULL, 5),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_client_cert)(b, chain, chain_len, key_bytes, 7),
           TETHER_RESULT_PRIVATE_KEY_MALFORMED);
    EXPECT(X(tether_tls_config_builder_set_client_cert)(b, chain, chain_len, chain, chain_len),
           TETHER_RESULT_PRIVATE_KEY_MALFORMED);
    EXPECT(X(tether_tls_config_builder_set_client_cert)(b, chain, chain_len, key_bytes, key_len),
           TETHER_RESULT_OK);
    {
        int i;
        for (i = 0; i < 100; i++) {
            uint8_t junk[200];
            size_t n = random_fill(junk, sizeof junk, 0);
            NO_PANIC(X(tether_tls_config_builder_set_client_cert)(b, junk, n, junk, n));
            NO_PANIC(X(tether_tls_config_builder_add_ca)(b, junk, n));
        }
    }
    EXPECT(X(tether_tls_config_builder_set_client_cert_files)(b, NULL, key), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_client_cert_files)(b, cert, "\xc3\x28"),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_tls_config_builder_set_client_cert_files)(b, cert, key), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_set_client_signer)(b, chain, chain_len, NULL, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_client_signer)(NULL, chain, chain_len, signer, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_tls_config_builder_set_client_signer)(b, root_der, root_der_len, signer, NULL));
    /* PKCS#11: argument checks, a missing module and a bad URI (no token is loaded here). */
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11)(b, "/nonexistent/p11.so", NULL, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11)(NULL, NULL, "pkcs11:object=k", NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11)(b, "\xc3\x28", "pkcs11:object=k", NULL),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11)(b, "/nonexistent/p11.so", "pkcs11:object=k", "1234"),
           TETHER_RESULT_PKCS11_MODULE_NOT_FOUND);
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11)(b, NULL, "token=t;object=k", NULL),
           TETHER_RESULT_PKCS11_URI_INVALID);
    EXPECT(X(tether_tls_config_builder_set_client_pkcs11_pin_callback)(b, NULL, "pkcs11:object=k", NULL, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    {
        char csr[TETHER_PKCS11_CSR_MAX_LEN + 1];
        size_t csr_len = 0;
        const char *gen_uri = "pkcs11:object=k;id=%01";
        EXPECT(X(tether_pkcs11_generate_csr)(NULL, gen_uri, NULL, "dev", csr, sizeof csr, NULL),
               TETHER_RESULT_NULL_ARGUMENT);
        EXPECT(X(tether_pkcs11_generate_csr)(NULL, gen_uri, NULL, NULL, csr, sizeof csr, &csr_len),
               TETHER_RESULT_NULL_ARGUMENT);
        EXPECT(X(tether_pkcs11_generate_csr)(NULL, gen_uri, NULL, "dev", csr, 10, &csr_len),
               TETHER_RESULT_BUFFER_TOO_SMALL);
        EXPECT(X(tether_pkcs11_generate_csr)(NULL, gen_uri, NULL, "dev", csr, sizeof csr, (size_t *)csr),
               TETHER_RESULT_INVALID_ARGUMENT);
        EXPECT(X(tether_pkcs11_generate_csr)("/nonexistent/p11.so", gen_uri, NULL, "dev", csr, sizeof csr,
                                             &csr_len),
               TETHER_RESULT_PKCS11_MODULE_NOT_FOUND);
    }
    EXPECT(X(tether_tls_config_builder_set_client_cert_files)(b, cert, key), TETHER_RESULT_OK);
    EXPECT(X(tether_tls_config_builder_build)(b, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_build)(NULL, &config), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_build)(b, (tether_tls_config **)b), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_build)(b, &config), TETHER_RESULT_OK);
    X(tether_tls_config_builder_free)(b);
    X(tether_tls_config_builder_free)(NULL);
    free(chain);
    free(key_bytes);

    EXPECT(X(tether_tls_config_rustls)(NULL, &rc), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_rustls)(config, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_rustls)(config, &rc), TETHER_RESULT_OK);
    rustls_client_config_free(rc);

    /* Port 1 on the loopback: refused at once; every bad argument is refused first. */
    EXPECT(X(tether_tls_config_check)(NULL, "localhost", 1, 500, report, sizeof report, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_check)(config, NULL, 1, 500, report, sizeof report, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_check)(config, "local\xffhost", 1, 500, report, sizeof report, &len),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_tls_config_check)(config, "localhost", 0, 500, report, sizeof report, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_tls_config_check)(config, "localhost", 1, 0, report, sizeof report, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_tls_config_check)(config, "localhost", 1, 500, NULL, 64, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_check)(config, "localhost", 1, 500, report, sizeof report, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    strcpy(ARENA, "localhost");
    EXPECT(X(tether_tls_config_check)(config, ARENA, 1, 500, ARENA, 64, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    NO_PANIC(X(tether_tls_config_check)(config, "localhost", 1, 500, report, sizeof report, &len));
    X(tether_tls_config_free)(NULL);
    return config;
}

static void clients(tether_tls_config *tls) {
    tether_client *client = NULL;
    tether_client_options options = X(tether_client_options_default)();
    tether_event event;
    const char *key = NULL, *value = NULL;
    const char *keys[2] = {"$.ct", "app"}, *values[2] = {"application/json", NULL};
    const char *bad_keys[1] = {"k\xff"};
    char rid[TETHER_REQUEST_ID_CAP];
    uint64_t id = 0;
    size_t len;
    printf("client\n");
    EXPECT(X(tether_client_new)(NULL, tls, NULL, &client), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_new)(CS, tls, NULL, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_new)("HostName=\xff", tls, NULL, &client), TETHER_RESULT_INVALID_UTF8);
    options.connect_timeout_ms = 0;
    EXPECT(X(tether_client_new)(CS, tls, &options, &client), TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(client == NULL);
    options = tether_client_options_default();
    CHECK(options.websocket_port == 443 && options.transport == TETHER_TRANSPORT_MQTT);
    options.transport = 3;
    EXPECT(X(tether_client_new)(CS, tls, &options, &client), TETHER_RESULT_INVALID_ARGUMENT);
    options.transport = TETHER_TRANSPORT_AUTO;
    options.websocket_port = 0;
    EXPECT(X(tether_client_new)(CS, tls, &options, &client), TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(client == NULL);
    options = tether_client_options_default();
    options.port = 1;
    options.connect_timeout_ms = 200;
    options.retry_max_ms = 100;
    EXPECT(X(tether_client_new)(CS, NULL, &options, &client), TETHER_RESULT_OK);
    /* The proxy: checked before anything changes; the password is never echoed. */
    EXPECT(X(tether_client_set_proxy)(NULL, "http://p:1"), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_set_proxy)(client, "http://u:\xff@p:1"), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_client_set_proxy)(client, "https://p:1"), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_set_proxy)(client, "http://u:hunter2@p:99999"),
           TETHER_RESULT_INVALID_ARGUMENT);
    {
        char message[512];
        size_t message_len = 0;
        EXPECT(tether_last_error(message, sizeof message, &message_len), TETHER_RESULT_OK);
        CHECK(strstr(message, "proxy URL") != NULL && strstr(message, "hunter2") == NULL);
    }
    EXPECT(X(tether_client_set_proxy)(client, "http://u:p%40ss@127.0.0.1:1"), TETHER_RESULT_OK);
    EXPECT(X(tether_client_set_proxy)(client, NULL), TETHER_RESULT_OK);
    X(tether_client_free)(client);
    client = NULL;
    /* A session cannot pick AUTO (its caller opens the connection); WEBSOCKETS is fine. */
    {
        tether_session *session = NULL;
        tether_session_options ws = tether_session_options_default();
        ws.transport = TETHER_TRANSPORT_AUTO;
        EXPECT(X(tether_session_new)(CS, tls, &ws, &session), TETHER_RESULT_INVALID_ARGUMENT);
        CHECK(session == NULL);
        ws.transport = TETHER_TRANSPORT_WEBSOCKETS;
        EXPECT(X(tether_session_new)(CS, tls, &ws, &session), TETHER_RESULT_OK);
        X(tether_session_free)(session);
    }
    EXPECT(X(tether_client_new)(CS, tls, &options, &client), TETHER_RESULT_OK);
    /* No TETHER_CONNECTION_STRING in the environment (the test clears it). */
    {
        tether_client *from_env = NULL;
        NO_PANIC(X(tether_client_new_from_env)(&from_env));
        X(tether_client_free)(from_env);
        EXPECT(X(tether_client_new_from_env)(NULL), TETHER_RESULT_NULL_ARGUMENT);
    }
    EXPECT(X(tether_client_connect)(NULL, 100), TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_client_connect)(client, 300));
    EXPECT(X(tether_client_send_telemetry)(NULL, (const uint8_t *)"x", 1, NULL, NULL, 0, 1, &id),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_send_telemetry)(client, NULL, 5, NULL, NULL, 0, 1, &id),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_send_telemetry)(client, (const uint8_t *)"x", 1, NULL, values, 2, 1, &id),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_send_telemetry)(client, (const uint8_t *)"x", 1, bad_keys, values, 1, 1,
                                           &id),
           TETHER_RESULT_INVALID_UTF8);
    memcpy(ARENA, "payload!", 8);
    EXPECT(X(tether_client_send_telemetry)(client, (const uint8_t *)ARENA, 16, NULL, NULL, 0, 1,
                                           (uint64_t *)ARENA + 1),
           TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(X(tether_client_inflight)(client) == 0);
    EXPECT(X(tether_client_send_telemetry)(client, (const uint8_t *)"{}", 2, keys, values, 2, 1, &id),
           TETHER_RESULT_OK);
    CHECK(tether_client_inflight(client) == 1);
    CHECK(X(tether_client_inflight)(NULL) == 0);
    EXPECT(tether_client_send_telemetry(client, (const uint8_t *)"x", 1, NULL, NULL, 0, 2, &id),
           TETHER_RESULT_MQTT_QOS_UNSUPPORTED);
    NO_PANIC(tether_client_send_telemetry(client, (const uint8_t *)"x", 1, NULL, NULL, 0, 255, &id));
    CHECK(tether_client_inflight(client) == 1);
    EXPECT(X(tether_client_subscribe)(client, 0), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_subscribe)(client, 64), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_subscribe)(NULL, TETHER_SUBSCRIBE_C2D), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_subscribe)(client, TETHER_SUBSCRIBE_C2D | TETHER_SUBSCRIBE_TWIN),
           TETHER_RESULT_OK);
    EXPECT(X(tether_client_poll)(client, 10, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_poll)(NULL, 10, &event), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_poll)(client, 10, (tether_event *)client), TETHER_RESULT_INVALID_ARGUMENT);
    NO_PANIC(X(tether_client_poll)(client, 50, &event));
    EXPECT(X(tether_client_event_property)(client, 0, &key, &key), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_event_property)(client, 0, NULL, &value), TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_client_event_property)(client, 99, &key, &value));
    EXPECT(X(tether_client_twin_get)(client, NULL, sizeof rid, &len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_twin_get)(client, rid, 3, &len), TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == TETHER_REQUEST_ID_CAP - 1);
    EXPECT(X(tether_client_twin_get)(client, ARENA, 64, (size_t *)ARENA), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_twin_get)(client, rid, sizeof rid, &len), TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_client_twin_patch_reported)(client, (const uint8_t *)"{}", 2, NULL, 64, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    memcpy(ARENA, "{\"a\":1}", 7);
    EXPECT(X(tether_client_twin_patch_reported)(client, (const uint8_t *)ARENA, 7, ARENA + 2, 64, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_client_twin_patch_reported)(client, (const uint8_t *)"{}", 2, rid, sizeof rid, &len),
           TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_client_respond_method)(client, NULL, 200, NULL, 0), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_respond_method)(client, "r\xff", 200, NULL, 0), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_client_respond_method)(client, "1", 200, NULL, 3), TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_client_respond_method)(client, "1", 200, (const uint8_t *)"{}", 2));
    EXPECT(X(tether_client_set_keys)(client, NULL, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_set_keys)(client, KEY, "\xff"), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_client_set_keys)(client, "***", NULL), TETHER_RESULT_SAS_KEY_INVALID);
    EXPECT(X(tether_client_set_keys)(client, KEY, KEY), TETHER_RESULT_OK);
    X(tether_client_disconnect)(NULL);
    X(tether_client_disconnect)(client);
    X(tether_client_free)(client);
    X(tether_client_free)(NULL);
}

static uint64_t clock_1970(void *context) {
    (void)context;
    return 1000; /* a device that booted believing it is 1970 */
}

static uint64_t clock_from(void *context) { return *(const uint64_t *)context; }

/* Many sessions on one thread and the two clocks: options, wall clock, resumption,
 * output pending, partial output, deadline changes. */
static void gateway_faces(const char *pki) {
    tether_tls_config_builder *b = tether_tls_config_builder_new();
    tether_tls_config *tls = NULL, *old_clock = NULL;
    tether_session *s = NULL;
    tether_session_options options = X(tether_session_options_default)();
    uint64_t wall = 1800000000000ull, deadline = 0, next = 0;
    bool pending = true, changed = false;
    uint8_t out[16];
    size_t len = 0, total = 0;
    char ca[512];
    path_in(ca, sizeof ca, pki, "ca.pem");
    printf("gateway faces\n");
    CHECK(options.keep_alive_secs == 60 && options.token_ttl_secs == 3600 && options.max_inflight == 128);
    CHECK(options.connect_timeout_ms == 30000 && options.max_unsent_bytes == 1048576);
    /* The wall clock: a callback, NULL for the OS clock. */
    EXPECT(X(tether_tls_config_builder_set_clock)(NULL, clock_1970, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_set_clock)(b, clock_1970, NULL), TETHER_RESULT_OK);
    EXPECT(tether_tls_config_builder_build(b, &old_clock), TETHER_RESULT_OK);
    EXPECT(tether_session_new(CS, old_clock, NULL, &s), TETHER_RESULT_OK);
    EXPECT(tether_session_connect(s, 5), TETHER_RESULT_CLOCK_NOT_SET);
    tether_session_free(s);
    s = NULL;
    EXPECT(X(tether_tls_config_builder_set_clock)(b, clock_from, &wall), TETHER_RESULT_OK);
    /* Resumption: on by default, off on request. */
    EXPECT(X(tether_tls_config_builder_enable_resumption)(NULL, false), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_tls_config_builder_enable_resumption)(b, false), TETHER_RESULT_OK);
    EXPECT(tether_tls_config_builder_add_ca_file(b, ca), TETHER_RESULT_OK);
    EXPECT(tether_tls_config_builder_build(b, &tls), TETHER_RESULT_OK);
    tether_tls_config_builder_free(b);
    /* Own options: checked before anything is created. */
    options.connect_timeout_ms = 0;
    EXPECT(tether_session_new(CS, tls, &options, &s), TETHER_RESULT_INVALID_ARGUMENT);
    CHECK(s == NULL);
    options = tether_session_options_default();
    options.keep_alive_secs = 2000;
    EXPECT(tether_session_new(CS, tls, &options, &s), TETHER_RESULT_INVALID_ARGUMENT);
    options.keep_alive_secs = 30;
    options.max_unsent_bytes = 0;
    EXPECT(tether_session_new(CS, tls, &options, &s), TETHER_RESULT_INVALID_ARGUMENT);
    options.max_unsent_bytes = 4096;
    EXPECT(tether_session_new(CS, tls, &options, &s), TETHER_RESULT_OK);
    /* Nothing pending, no deadline before a connection; then both change. */
    EXPECT(X(tether_session_output_pending)(NULL, &pending), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_output_pending)(s, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_output_pending)(s, (bool *)s), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_output_pending)(s, &pending), TETHER_RESULT_OK);
    CHECK(!pending);
    EXPECT(X(tether_session_poll_deadline)(NULL, &changed, &deadline), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_deadline)(s, NULL, &deadline), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_deadline)(s, &changed, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_deadline)(s, &changed, (uint64_t *)(void *)&changed),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_poll_deadline)(s, &changed, &deadline), TETHER_RESULT_OK);
    CHECK(!changed);
    /* Monotonic time starts at 7: any origin works, the wall clock is the callback's. */
    EXPECT(tether_session_connect(s, 7), TETHER_RESULT_OK);
    EXPECT(tether_session_output_pending(s, &pending), TETHER_RESULT_OK);
    CHECK(pending);
    EXPECT(tether_session_poll_deadline(s, &changed, &deadline), TETHER_RESULT_OK);
    CHECK(changed && deadline == 7 + 30000);
    EXPECT(tether_session_poll_deadline(s, &changed, &next), TETHER_RESULT_OK);
    CHECK(!changed && next == 0); /* unchanged: not written */
    /* Partial output: 16 bytes at a time (a slow socket), in order, until nothing is left. */
    do {
        EXPECT(tether_session_poll_output(s, out, sizeof out, &len), TETHER_RESULT_OK);
        if (total == 0) CHECK(len == sizeof out && out[0] == 0x16);
        total += len;
    } while (len > 0);
    CHECK(total > 100);
    EXPECT(tether_session_output_pending(s, &pending), TETHER_RESULT_OK);
    CHECK(!pending);
    EXPECT(tether_session_poll_output(s, NULL, 0, &len), TETHER_RESULT_OK);
    CHECK(len == 0);
    /* The wall clock jumps back by decades: the monotonic deadline does not move. */
    wall = 1000;
    tether_session_handle_timeout(s, 8);
    EXPECT(tether_session_next_deadline(s, &next), TETHER_RESULT_OK);
    CHECK(next == 7 + 30000);
    tether_session_connection_lost(s);
    EXPECT(tether_session_poll_deadline(s, &changed, &deadline), TETHER_RESULT_OK);
    CHECK(changed && deadline == TETHER_NO_DEADLINE);
    tether_session_free(s);
    tether_tls_config_free(tls);
    tether_tls_config_free(old_clock);
}

static void sessions(void) {
    tether_session *s = NULL;
    tether_event event;
    const char *key, *value;
    uint8_t out[8192];
    size_t len = 0;
    uint64_t deadline, id, now = 1800000000000ull;
    int i;
    printf("session\n");
    EXPECT(X(tether_session_new)(NULL, NULL, NULL, &s), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_new)(CS, NULL, NULL, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_new)("\xff", NULL, NULL, &s), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_session_new)(CS, NULL, NULL, &s), TETHER_RESULT_OK);
    EXPECT(X(tether_session_connect)(NULL, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_connect)(s, now), TETHER_RESULT_OK);
    EXPECT(X(tether_session_poll_output)(s, NULL, 10, &len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_output)(s, out, sizeof out, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_output)(NULL, out, sizeof out, &len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_poll_output)(s, (uint8_t *)ARENA, 64, (size_t *)(ARENA + 8)),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_poll_output)(s, out, 5, &len), TETHER_RESULT_OK);
    CHECK(len == 5 && out[0] == 0x16); /* a TLS handshake record: the ClientHello */
    EXPECT(X(tether_session_poll_output)(s, out, sizeof out, &len), TETHER_RESULT_OK);
    CHECK(len > 0);
    EXPECT(X(tether_session_next_deadline)(s, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_next_deadline)(s, (uint64_t *)s), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_next_deadline)(s, &deadline), TETHER_RESULT_OK);
    CHECK(deadline > now);
    EXPECT(X(tether_session_handle_input)(s, NULL, 4, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_handle_input)(NULL, out, 4, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_send_telemetry)(s, NULL, 3, NULL, NULL, 0, 1, now, &id),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_send_telemetry)(s, (const uint8_t *)"{}", 2, NULL, NULL, 0, 1, now,
                                            (uint64_t *)s),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_send_telemetry)(s, (const uint8_t *)"{}", 2, NULL, NULL, 0, 1, now, &id),
           TETHER_RESULT_OK);
    EXPECT(X(tether_session_subscribe)(s, 0, now), TETHER_RESULT_INVALID_ARGUMENT);
    NO_PANIC(X(tether_session_subscribe)(s, TETHER_SUBSCRIBE_METHODS, now));
    EXPECT(X(tether_session_respond_method)(s, NULL, 200, NULL, 0, now), TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_session_respond_method)(s, "1", 200, NULL, 0, now));
    /* Random bytes from the "hub": errors and DISCONNECTED events, never a panic. */
    for (i = 0; i < 200; i++) {
        uint8_t junk[300];
        size_t n = random_fill(junk, sizeof junk, 0);
        if (i % 20 == 0) {
            NO_PANIC(X(tether_session_connection_lost)(s));
            NO_PANIC(tether_session_connect(s, now + (uint64_t)i * 1000));
            NO_PANIC(tether_session_poll_output(s, out, sizeof out, &len));
        }
        NO_PANIC(tether_session_handle_input(s, junk, n, now + (uint64_t)i * 1000));
        NO_PANIC(X(tether_session_handle_timeout)(s, now + (uint64_t)i * 1000));
        NO_PANIC(X(tether_session_poll_event)(s, &event));
        NO_PANIC(X(tether_session_event_property)(s, 0, &key, &value));
    }
    EXPECT(X(tether_session_poll_event)(s, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_event_property)(s, 0, &key, &key), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_session_handle_timeout)(NULL, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_connection_lost)(NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_session_disconnect)(NULL, now), TETHER_RESULT_NULL_ARGUMENT);
    NO_PANIC(X(tether_session_disconnect)(s, now));
    /* Extreme clocks. */
    NO_PANIC(tether_session_handle_timeout(s, UINT64_MAX));
    NO_PANIC(tether_session_connection_lost(s));
    NO_PANIC(tether_session_connect(s, UINT64_MAX));
    NO_PANIC(tether_session_handle_timeout(s, UINT64_MAX));
    NO_PANIC(tether_session_send_telemetry(s, (const uint8_t *)"x", 1, NULL, NULL, 0, 1, UINT64_MAX, &id));
    NO_PANIC(tether_session_send_telemetry(s, (const uint8_t *)"x", 1, NULL, NULL, 0, 9, now, &id));
    NO_PANIC(tether_session_subscribe(s, TETHER_SUBSCRIBE_TWIN, UINT64_MAX));
    NO_PANIC(tether_session_respond_method(s, "1", 65535, NULL, 0, UINT64_MAX));
    NO_PANIC(tether_session_disconnect(s, UINT64_MAX));
    X(tether_session_free)(s);
    X(tether_session_free)(NULL);
}

static void dps_sessions(void) {
    tether_dps_session *d = NULL;
    uint8_t out[8192];
    char hub[TETHER_DPS_HUB_CAP], device[TETHER_DPS_DEVICE_ID_CAP];
    size_t len = 0, hub_len = 0, device_len = 0;
    uint64_t deadline, now = 1800000000000ull;
    uint32_t status = 99;
    int i;
    printf("dps session\n");
#define DPS_NEW(ep, scope, reg, key, timeout, out)                                                \
    X(tether_dps_session_new)(ep, scope, reg, key, false, NULL, timeout, out)
    EXPECT(DPS_NEW("localhost", NULL, "dev-1", KEY, 5000, &d), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", NULL, KEY, 5000, &d), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev\xff", KEY, 5000, &d),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", KEY, 5000, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", KEY, 0, &d), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(DPS_NEW("not a host", "0ne00abc123", "dev-1", KEY, 5000, &d),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", "not base64!", 5000, &d),
           TETHER_RESULT_SAS_KEY_INVALID);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", NULL, 5000, &d),
           TETHER_RESULT_INVALID_ARGUMENT); /* X.509 without a client certificate */
    EXPECT(DPS_NEW(NULL, "0ne00abc123", "dev-1", KEY, 5000, &d), TETHER_RESULT_OK);
    EXPECT(X(tether_dps_session_status)(d, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_status)(NULL, &status), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_status)(d, (uint32_t *)d), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_dps_session_status)(d, &status), TETHER_RESULT_OK);
    CHECK(status == TETHER_DPS_STATUS_IN_PROGRESS);
    EXPECT(X(tether_dps_session_next_deadline)(d, &deadline), TETHER_RESULT_NOT_FOUND);
    EXPECT(X(tether_dps_session_poll_output)(d, out, sizeof out, &len), TETHER_RESULT_OK);
    CHECK(len == 0);
    EXPECT(X(tether_dps_session_handle_input)(d, out, 4, now), TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_dps_session_start)(NULL, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_start)(d, 1000), TETHER_RESULT_CLOCK_NOT_SET);
    X(tether_dps_session_free)(d);
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", KEY, 5000, &d), TETHER_RESULT_OK);
    EXPECT(X(tether_dps_session_start)(d, now), TETHER_RESULT_OK);
    EXPECT(X(tether_dps_session_start)(d, now), TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_dps_session_result)(d, hub, sizeof hub, &hub_len, device, sizeof device,
                                        &device_len),
           TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_dps_session_result)(NULL, hub, sizeof hub, &hub_len, device, sizeof device,
                                        &device_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_result)(d, NULL, sizeof hub, &hub_len, device, sizeof device,
                                        &device_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_result)(d, hub, sizeof hub, &hub_len, hub, sizeof device,
                                        &device_len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_dps_session_poll_output)(d, NULL, 10, &len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_poll_output)(d, out, sizeof out, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_poll_output)(NULL, out, sizeof out, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_poll_output)(d, (uint8_t *)ARENA, 64, (size_t *)(ARENA + 8)),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_dps_session_poll_output)(d, out, 5, &len), TETHER_RESULT_OK);
    CHECK(len == 5 && out[0] == 0x16); /* a TLS handshake record: the ClientHello */
    EXPECT(X(tether_dps_session_poll_output)(d, out, sizeof out, &len), TETHER_RESULT_OK);
    CHECK(len > 0);
    EXPECT(X(tether_dps_session_next_deadline)(d, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_next_deadline)(NULL, &deadline), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_next_deadline)(d, &deadline), TETHER_RESULT_OK);
    CHECK(deadline == now + 5000);
    EXPECT(X(tether_dps_session_handle_input)(d, NULL, 4, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_handle_input)(NULL, out, 4, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_handle_timeout)(NULL, now), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_session_connection_lost)(NULL), TETHER_RESULT_NULL_ARGUMENT);
    /* The deadline passes during the handshake: a named timeout. */
    EXPECT(X(tether_dps_session_handle_timeout)(d, now + 4999), TETHER_RESULT_OK);
    EXPECT(tether_dps_session_status(d, &status), TETHER_RESULT_OK);
    CHECK(status == TETHER_DPS_STATUS_IN_PROGRESS);
    EXPECT(tether_dps_session_handle_timeout(d, now + 5000), TETHER_RESULT_OK);
    EXPECT(tether_dps_session_status(d, &status), TETHER_RESULT_OK);
    CHECK(status == TETHER_DPS_STATUS_FAILED);
    hub_len = device_len = 77;
    EXPECT(tether_dps_session_result(d, hub, sizeof hub, &hub_len, device, sizeof device,
                                     &device_len),
           TETHER_RESULT_TIMEOUT);
    CHECK(hub_len == 77 && device_len == 77); /* nothing written on failure */
    EXPECT(tether_dps_session_next_deadline(d, &deadline), TETHER_RESULT_NOT_FOUND);
    X(tether_dps_session_free)(d);
    X(tether_dps_session_free)(NULL);
    /* Random bytes from "DPS": a failure, never a panic. */
    for (i = 0; i < 50; i++) {
        uint8_t junk[300];
        size_t n = random_fill(junk, sizeof junk, 0);
        d = NULL;
        EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", KEY, 5000, &d), TETHER_RESULT_OK);
        NO_PANIC(tether_dps_session_start(d, now));
        NO_PANIC(tether_dps_session_poll_output(d, out, sizeof out, &len));
        NO_PANIC(tether_dps_session_handle_input(d, junk, n, now + 1));
        NO_PANIC(tether_dps_session_handle_timeout(d, UINT64_MAX));
        NO_PANIC(tether_dps_session_connection_lost(d));
        NO_PANIC(tether_dps_session_poll_output(d, out, sizeof out, &len));
        NO_PANIC(tether_dps_session_result(d, hub, sizeof hub, &hub_len, device, sizeof device,
                                           &device_len));
        tether_dps_session_free(d);
    }
    /* Extreme clocks. */
    EXPECT(DPS_NEW("localhost", "0ne00abc123", "dev-1", KEY, 5000, &d), TETHER_RESULT_OK);
    NO_PANIC(tether_dps_session_start(d, UINT64_MAX));
    NO_PANIC(tether_dps_session_handle_timeout(d, UINT64_MAX));
    NO_PANIC(tether_dps_session_connection_lost(d));
    tether_dps_session_free(d);
#undef DPS_NEW
}

static void property_bags(void) {
    tether_property_bag bag;
    tether_property_iter iter;
    tether_property prop;
    char buf[64];
    const char *encoded = "%24.ct=application%2Fjson&app=1&bare";
    int i;
    printf("property bags\n");
    EXPECT(X(tether_property_bag_init)(NULL, buf, sizeof buf), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_bag_init)(&bag, NULL, sizeof buf), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_bag_init)(&bag, buf, 0), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_property_bag_init)((tether_property_bag *)buf, buf, sizeof buf),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_property_bag_init)(&bag, buf, 12), TETHER_RESULT_OK);
    EXPECT(X(tether_property_bag_append)(&bag, NULL, "v"), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_bag_append)(&bag, "k\xff", "v"), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_property_bag_append)(&bag, "", "v"), TETHER_RESULT_PROPERTY_BAG_INVALID);
    EXPECT(X(tether_property_bag_append)(&bag, "$.ct", "application/json"),
           TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(bag.len == 0 && buf[0] == 0);
    EXPECT(X(tether_property_bag_append)(&bag, "a", "1"), TETHER_RESULT_OK);
    /* a key taken from the bag's own free space */
    strcpy(buf + 8, "k");
    EXPECT(X(tether_property_bag_append)(&bag, buf + 8, NULL), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_property_iter_init)(NULL, encoded, strlen(encoded)), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_iter_init)(&iter, NULL, 3), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_iter_init)(&iter, encoded, strlen(encoded)), TETHER_RESULT_OK);
    EXPECT(X(tether_property_iter_next)(&iter, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_property_iter_next)(&iter, (tether_property *)&iter), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_property_iter_next)(&iter, &prop), TETHER_RESULT_OK);
    EXPECT(tether_property_iter_next(&iter, &prop), TETHER_RESULT_OK);
    EXPECT(tether_property_iter_next(&iter, &prop), TETHER_RESULT_OK);
    EXPECT(tether_property_iter_next(&iter, &prop), TETHER_RESULT_NOT_FOUND);
    for (i = 0; i < 300; i++) {
        uint8_t junk[120];
        size_t n = random_fill(junk, sizeof junk, 0);
        int steps = 0;
        EXPECT(tether_property_iter_init(&iter, (const char *)junk, n), TETHER_RESULT_OK);
        while (tether_property_iter_next(&iter, &prop) == TETHER_RESULT_OK && steps < 200) steps++;
        CHECK(steps < 200);
    }
    check_text_output("tether_property_decode", a_property_decode, "a%2Fb", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_parser("tether_property_bag_find", p_bag_find, (const uint8_t *)encoded, strlen(encoded),
                 TETHER_RESULT_OK);
}

static void misc(const char *pki) {
    char buf[256];
    size_t len;
    bool expiring = false;
    uint32_t r;
    int counter = 0;
    printf("misc\n");
    for (r = 0; r < 1100; r++) CHECK(X(tether_result_name)(r) != NULL);
    CHECK(tether_result_name(UINT32_MAX) != NULL);
    CHECK(strcmp(X(tether_version)(), TETHER_VERSION_STRING) == 0);
    /* The defaults: one static struct, the same values tether_client_options_default() uses. */
    CHECK(X(tether_defaults_get)() != NULL && tether_defaults_get() == tether_defaults_get());
    CHECK(tether_defaults_get()->port == tether_client_options_default().port);
    CHECK(tether_defaults_get()->connect_timeout_ms == tether_client_options_default().connect_timeout_ms);
    for (r = 0; r < 256; r++) NO_PANIC(X(tether_mqtt_connack_check)((uint8_t)r));
    EXPECT(X(tether_set_log_callback)(0, on_log, &counter), TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_set_log_callback)(TETHER_LOG_DEBUG, on_log, &counter), TETHER_RESULT_OK);
    EXPECT(X(tether_set_log_callback)(TETHER_LOG_DEBUG, NULL, NULL), TETHER_RESULT_OK);
    /* tether_last_error, after a failure. */
    EXPECT(tether_sas_token(NULL, KEY, NULL, 1, buf, sizeof buf, &len), TETHER_RESULT_NULL_ARGUMENT);
    check_text_output("tether_last_error", a_last_error, NULL, 0);
    /* x509 */
    EXPECT(X(tether_x509_check_identity)(root_der, root_der_len, "dev-1", NULL),
           TETHER_RESULT_CERT_DEVICE_MISMATCH);
    EXPECT(X(tether_x509_check_identity)(root_der, root_der_len, "dev\xff", NULL), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_x509_check_identity)(NULL, 5, "dev-1", NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_x509_check_validity)(root_der, root_der_len, 1800000000), TETHER_RESULT_OK);
    NO_PANIC(tether_x509_check_validity(root_der, root_der_len, INT64_MIN));
    NO_PANIC(tether_x509_check_validity(root_der, root_der_len, INT64_MAX));
    EXPECT(X(tether_x509_expires_within)(root_der, root_der_len, INT64_MIN, UINT32_MAX, &expiring),
           TETHER_RESULT_OK);
    EXPECT(tether_x509_expires_within(root_der, root_der_len, INT64_MAX, 0, &expiring), TETHER_RESULT_OK);
    CHECK(expiring);
    EXPECT(tether_x509_expires_within(root_der, root_der_len, 0, 1, NULL), TETHER_RESULT_NULL_ARGUMENT);
    memcpy(ARENA, root_der, root_der_len);
    EXPECT(tether_x509_expires_within((const uint8_t *)ARENA, root_der_len, 0, 1, (bool *)ARENA + 9),
           TETHER_RESULT_INVALID_ARGUMENT);
    {
        int i;
        for (i = 0; i < 300; i++) {
            uint8_t junk[200];
            size_t n = random_fill(junk, sizeof junk, 0);
            if (i % 2) memcpy(junk, root_der, n < 100 ? n : 100); /* truncated real DER */
            NO_PANIC(tether_x509_check_validity(junk, n, (int64_t)rnd()));
            NO_PANIC(tether_x509_check_identity(junk, n, "dev-1", "m"));
            NO_PANIC(tether_x509_expires_within(junk, n, (int64_t)rnd(), (uint32_t)rnd(), &expiring));
            NO_PANIC(tether_x509_thumbprint(junk, n, TETHER_THUMBPRINT_SHA1, buf, sizeof buf, &len));
        }
    }
    check_text_output("tether_x509_thumbprint", a_thumbprint, NULL, 0);
    EXPECT(tether_x509_thumbprint(root_der, root_der_len, 9, buf, sizeof buf, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    /* request ids: a counter, so the exact size may change between calls */
    EXPECT(X(tether_request_id_next)(buf, TETHER_REQUEST_ID_CAP, &len), TETHER_RESULT_OK);
    EXPECT(tether_request_id_next(buf, 1, &len), TETHER_RESULT_BUFFER_TOO_SMALL);
    EXPECT(tether_request_id_next(NULL, 5, &len), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(tether_request_id_next(buf, sizeof buf, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(tether_request_id_next(ARENA, 64, (size_t *)ARENA), TETHER_RESULT_INVALID_ARGUMENT);
    (void)pki;
}

static void dps(tether_tls_config *tls) {
    char hub[TETHER_DPS_HUB_CAP], device[TETHER_DPS_DEVICE_ID_CAP];
    size_t hub_len, device_len;
    printf("dps\n");
    check_text_output("tether_dps_derive_key", a_derive_key, "dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_dps_client_id", a_dps_client_id, "dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_dps_username", a_dps_username, "dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_dps_register_topic", a_dps_register_topic, "42", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_dps_poll_topic", a_dps_poll_topic, "4.abc-def", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_dps_register_payload", a_dps_register_payload, "dev-1",
                      IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    {
        const char *topic = "$dps/registrations/res/202/?$rid=1&retry-after=3";
        const char *body = "{\"operationId\":\"4.abc\",\"status\":\"assigned\",\"registrationState\":"
                           "{\"assignedHub\":\"hub.azure-devices.net\",\"deviceId\":\"dev-1\"}}";
        check_parser("tether_dps_parse_response_topic", p_dps_topic, (const uint8_t *)topic,
                     strlen(topic), TETHER_RESULT_OK);
        check_parser("tether_dps_parse_body", p_dps_body, (const uint8_t *)body, strlen(body),
                     TETHER_RESULT_OK);
    }
#define PROVISION(ep, port, scope, reg, key, hub_out, hub_cap, hl, dev_out, dev_cap, dl)         \
    X(tether_dps_provision)(ep, port, scope, reg, key, false, tls, 300, hub_out, hub_cap, hl, \
                            dev_out, dev_cap, dl)
    EXPECT(PROVISION("localhost", 1, NULL, "dev-1", KEY, hub, sizeof hub, &hub_len, device,
                     sizeof device, &device_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(PROVISION("localhost", 1, "0ne00abc123", "dev\xff", KEY, hub, sizeof hub, &hub_len,
                     device, sizeof device, &device_len),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(PROVISION("localhost", 1, "0ne00abc123", "dev-1", KEY, NULL, sizeof hub, &hub_len,
                     device, sizeof device, &device_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(PROVISION("localhost", 1, "0ne00abc123", "dev-1", KEY, hub, sizeof hub, &hub_len,
                     device, sizeof device, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(PROVISION("localhost", 1, "0ne00abc123", "dev-1", KEY, hub, 10, &hub_len, device,
                     sizeof device, &device_len),
           TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(hub_len == TETHER_DPS_HUB_CAP - 1 && device_len == TETHER_DPS_DEVICE_ID_CAP - 1);
    EXPECT(PROVISION("localhost", 1, "0ne00abc123", "dev-1", KEY, hub, sizeof hub, &hub_len, hub,
                     sizeof device, &device_len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(PROVISION("localhost", 0, "0ne00abc123", "dev-1", KEY, hub, sizeof hub, &hub_len,
                     device, sizeof device, &device_len),
           TETHER_RESULT_INVALID_ARGUMENT);
    NO_PANIC(PROVISION("localhost", 1, "0ne00abc123", "dev-1", KEY, hub, sizeof hub, &hub_len,
                       device, sizeof device, &device_len));
}

static void topics_and_codec(void) {
    uint8_t raw[64];
    int i;
    printf("topics and codec\n");
    check_text_output("tether_sas_token", a_sas_token, KEY, IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_sas_token(resource)", a_sas_token_resource,
                      "hub.azure-devices.net/devices/dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_mqtt_client_id", a_mqtt_client_id, "dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_mqtt_username", a_mqtt_username, "dev-1", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_telemetry_topic", a_telemetry_topic, "%24.ct=a", IN_UTF8 | IN_RANDOM);
    check_text_output("tether_c2d_subscribe_topic", a_c2d_subscribe_topic, "dev-1",
                      IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_twin_get_topic", a_twin_get_topic, "17", IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_twin_patch_reported_topic", a_twin_patch_topic, "18",
                      IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    check_text_output("tether_method_response_topic", a_method_response_topic, "19",
                      IN_REQUIRED | IN_UTF8 | IN_RANDOM);
    {
        const char *c2d = "devices/dev-1/messages/devicebound/%24.mid=1&%24.to=%2Fdevices&x=y";
        const char *twin = "$iothub/twin/res/200/?$rid=17&$version=4";
        const char *method = "$iothub/methods/POST/reboot/?$rid=9";
        const uint8_t publish[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
        check_parser("tether_c2d_parse_topic", p_c2d, (const uint8_t *)c2d, strlen(c2d), TETHER_RESULT_OK);
        check_parser("tether_twin_parse_topic", p_twin, (const uint8_t *)twin, strlen(twin), TETHER_RESULT_OK);
        check_parser("tether_method_parse_request_topic", p_method, (const uint8_t *)method,
                     strlen(method), TETHER_RESULT_OK);
        check_parser("tether_mqtt_decode", p_decode, publish, sizeof publish, TETHER_RESULT_OK);
    }
    check_bytes_output("tether_mqtt_encode_puback", b_puback, NULL, 0);
    check_bytes_output("tether_mqtt_encode_pingreq", b_pingreq, NULL, 0);
    check_bytes_output("tether_mqtt_encode_disconnect", b_disconnect, NULL, 0);
    check_bytes_output("tether_mqtt_encode_publish", b_publish, (const uint8_t *)"{\"t\":21}", 8);
    check_bytes_output("tether_mqtt_encode_subscribe", b_subscribe, (const uint8_t *)"\x01\x00", 2);
    check_bytes_output("tether_mqtt_encode_unsubscribe", b_unsubscribe, NULL, 0);
    check_bytes_output("tether_mqtt_encode_connect", b_connect, (const uint8_t *)"gone", 4);
    for (i = 0; i < 64; i++) raw[i] = (uint8_t)(i * 37 + 1);
    check_bytes_output("tether_ecdsa_raw_to_der", b_raw_to_der, raw, 64);
    EXPECT(X(tether_mqtt_encode_connect)(NULL, (uint8_t *)ARENA, 64, &arena_words[100]),
           TETHER_RESULT_NULL_ARGUMENT);
    {
        /* The output buffer over the password. */
        tether_mqtt_connect_options opts;
        size_t len;
        memset(&opts, 0, sizeof opts);
        strcpy(ARENA, "SharedAccessSignature sr=x&sig=y&se=1");
        opts.client_id = "dev-1";
        opts.username = "u";
        opts.password = ARENA;
        EXPECT(tether_mqtt_encode_connect(&opts, (uint8_t *)ARENA + 4, 512, &len),
               TETHER_RESULT_INVALID_ARGUMENT);
        opts.client_id = "d\xff";
        EXPECT(tether_mqtt_encode_connect(&opts, (uint8_t *)ARENA + 1024, 512, &len),
               TETHER_RESULT_INVALID_UTF8);
    }
}

static void audit(void) {
    /* A minimal TLS 1.2 ClientHello offering the two GCM suites, no extensions. */
    uint8_t hello[54] = {0x16, 0x03, 0x01, 0x00, 0x31, 0x01, 0x00, 0x00, 0x2d, 0x03, 0x03};
    uint8_t junk[300];
    char report[4096];
    size_t len = 0, need = 0, n;
    enum tether_audit_verdict verdict = TETHER_AUDIT_VERDICT_OK;
    int i;
    printf("audit\n");
    for (i = 11; i < 43; i++) hello[i] = (uint8_t)i; /* random */
    hello[43] = 0x00;                                 /* session id */
    hello[44] = 0x00; hello[45] = 0x04;
    hello[46] = 0xc0; hello[47] = 0x2f; hello[48] = 0xc0; hello[49] = 0x30;
    hello[50] = 0x01; hello[51] = 0x00;               /* compression: null */
    hello[52] = 0x00; hello[53] = 0x00;               /* no extensions */
    EXPECT(X(tether_audit_client_hello)(hello, sizeof hello, &verdict, NULL, 0, &need),
           TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(need > 0 && need < sizeof report);
    EXPECT(tether_audit_client_hello(hello, sizeof hello, &verdict, report, need, &len),
           TETHER_RESULT_BUFFER_TOO_SMALL);
    EXPECT(tether_audit_client_hello(hello, sizeof hello, &verdict, report, need + 1, &len),
           TETHER_RESULT_OK);
    CHECK(len == need && report[len] == 0 && report[0] == '{');
    CHECK(verdict != TETHER_AUDIT_VERDICT_WILL_FAIL);
    EXPECT(tether_audit_client_hello(NULL, sizeof hello, &verdict, report, sizeof report, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(tether_audit_client_hello(hello, sizeof hello, NULL, report, sizeof report, &len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(tether_audit_client_hello(hello, sizeof hello, &verdict, report, sizeof report, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(tether_audit_client_hello(hello, 0, &verdict, report, sizeof report, &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    /* the report overlapping the hello, and the length inside the report */
    memcpy(ARENA, hello, sizeof hello);
    EXPECT(tether_audit_client_hello((const uint8_t *)ARENA, sizeof hello, &verdict, ARENA + 8, 2048,
                                     &len),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(tether_audit_client_hello(hello, sizeof hello, &verdict, ARENA, 2048, (size_t *)ARENA),
           TETHER_RESULT_INVALID_ARGUMENT);
    for (i = 0; i < 300; i++) {
        n = random_fill(junk, sizeof junk, 0);
        if (i % 2) memcpy(junk, hello, n < sizeof hello ? n : sizeof hello); /* truncated */
        NO_PANIC(tether_audit_client_hello(junk, n, &verdict, report, sizeof report, &len));
    }
}

/* A flash-backed credential store for the callback API: one slot. */
static uint8_t flash[16384];
static size_t flash_len;
static int flash_mode; /* 0: behave, 1: fail loads */
static int flash_load(void *user, uint8_t *buf, size_t cap, size_t *len) {
    (void)user;
    if (flash_mode == 1) return -5;
    if (flash_len == 0) return 1;
    *len = flash_len;
    if (cap < flash_len) return 2;
    memcpy(buf, flash, flash_len);
    return 0;
}
static int flash_save(void *user, const uint8_t *credential, size_t len) {
    (void)user;
    if (len > sizeof flash) return -1;
    memcpy(flash, credential, len);
    flash_len = len;
    return 0;
}

static void certificates(tether_tls_config *tls, const char *pki) {
    tether_credential_store *store = NULL, *cb = NULL;
    tether_client *client = NULL, *sas = NULL;
    tether_client_options options = tether_client_options_default();
    char dir[512], cert[512], key[512];
    uint8_t *chain, *key_bytes;
    size_t chain_len, key_len;
    uint64_t generation = 0;
    printf("certificates\n");
    path_in(dir, sizeof dir, pki, "abuse-store");
    path_in(cert, sizeof cert, pki, "device.pem");
    path_in(key, sizeof key, pki, "device.key");
    EXPECT(X(tether_credential_store_open)(NULL, &store), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_open)(dir, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_open)("/tmp/\xff", &store), TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_credential_store_open)("/proc/nonexistent/store", &store), TETHER_RESULT_IO);
    CHECK(store == NULL);
    EXPECT(X(tether_credential_store_open)(dir, &store), TETHER_RESULT_OK);
    EXPECT(X(tether_credential_store_generation)(NULL, &generation), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_generation)(store, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_generation)(store, &generation), TETHER_RESULT_NOT_FOUND);
    EXPECT(X(tether_credential_store_new_callbacks)(NULL, flash_save, NULL, &cb),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_new_callbacks)(flash_load, NULL, NULL, &cb),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_new_callbacks)(flash_load, flash_save, NULL, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_credential_store_new_callbacks)(flash_load, flash_save, NULL, &cb),
           TETHER_RESULT_OK);
    EXPECT(tether_credential_store_generation(cb, &generation), TETHER_RESULT_NOT_FOUND);
    flash_mode = 1;
    EXPECT(tether_credential_store_generation(cb, &generation), TETHER_RESULT_IO);
    flash_mode = 0;
    memcpy(flash, "generation: x\nhub: h\n", 21);
    flash_len = 21;
    EXPECT(tether_credential_store_generation(cb, &generation), TETHER_RESULT_INVALID_ARGUMENT);
    flash_len = 0;

    /* DPS with a CSR: argument checks, then a port where nothing listens. */
    EXPECT(X(tether_dps_provision_with_csr)(NULL, 1, NULL, "reg", KEY, false, tls, 100, store),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_provision_with_csr)(NULL, 1, "0ne1", "reg", KEY, false, tls, 100, NULL),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_dps_provision_with_csr)(NULL, 1, "0ne1", "r\xff", KEY, false, tls, 100, store),
           TETHER_RESULT_INVALID_UTF8);
    EXPECT(X(tether_dps_provision_with_csr)(NULL, 0, "0ne1", "reg", KEY, false, tls, 100, store),
           TETHER_RESULT_INVALID_ARGUMENT);
    EXPECT(X(tether_dps_provision_with_csr)("127.0.0.1", 1, "0ne1", "reg", "***", false, tls, 100,
                                            store),
           TETHER_RESULT_SAS_KEY_INVALID);
    NO_PANIC(X(tether_dps_provision_with_csr)("127.0.0.1", 1, "0ne1", "reg", KEY, false, tls, 300,
                                              cb));
    EXPECT(tether_credential_store_generation(store, &generation), TETHER_RESULT_NOT_FOUND);

    /* A client from stored credentials: nothing stored yet. */
    EXPECT(X(tether_client_new_from_credentials)(NULL, tls, NULL, &client), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_new_from_credentials)(store, tls, NULL, NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_new_from_credentials)(store, tls, &options, &client), TETHER_RESULT_NOT_FOUND);
    EXPECT(X(tether_client_new_from_credentials)(cb, NULL, NULL, &client), TETHER_RESULT_NOT_FOUND);
    CHECK(client == NULL);

    /* A certificate swap on an X.509 client; a SAS client has none to swap. */
    chain = read_file(cert, &chain_len);
    key_bytes = read_file(key, &key_len);
    EXPECT(tether_client_new("HostName=localhost;DeviceId=dev-1;x509=true", tls, NULL, &client),
           TETHER_RESULT_OK);
    EXPECT(tether_client_new(CS, NULL, NULL, &sas), TETHER_RESULT_OK);
    EXPECT(X(tether_client_set_certificate)(NULL, tls, chain, chain_len, key_bytes, key_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_set_certificate)(client, tls, NULL, 5, key_bytes, key_len),
           TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_set_certificate)(client, tls, chain, chain_len, key_bytes, 9),
           TETHER_RESULT_PRIVATE_KEY_MALFORMED);
    EXPECT(X(tether_client_set_certificate)(client, tls, root_der, root_der_len, key_bytes, key_len),
           TETHER_RESULT_KEY_CERT_MISMATCH);
    EXPECT(X(tether_client_set_certificate)(sas, tls, chain, chain_len, key_bytes, key_len),
           TETHER_RESULT_INVALID_STATE);
    EXPECT(X(tether_client_set_certificate)(client, tls, chain, chain_len, key_bytes, key_len),
           TETHER_RESULT_OK);
    EXPECT(X(tether_client_set_certificate)(client, NULL, chain, chain_len, key_bytes, key_len),
           TETHER_RESULT_OK);
    {
        int i;
        for (i = 0; i < 50; i++) {
            uint8_t junk[200];
            size_t n = random_fill(junk, sizeof junk, 0);
            NO_PANIC(tether_client_set_certificate(client, tls, junk, n, junk, n));
        }
    }
    /* DPS with a CSR on the caller's socket: the key is made and kept by the registration. */
    {
        tether_dps_session *ds = NULL;
        EXPECT(tether_dps_session_new("localhost", "0ne1", "reg-1", KEY, false, tls, 1000, &ds),
               TETHER_RESULT_OK);
        EXPECT(X(tether_dps_session_request_certificate)(NULL), TETHER_RESULT_NULL_ARGUMENT);
        EXPECT(X(tether_dps_session_store_certificate)(ds, tls, 0, store), TETHER_RESULT_INVALID_STATE);
        EXPECT(X(tether_dps_session_request_certificate)(ds), TETHER_RESULT_OK);
        EXPECT(X(tether_dps_session_store_certificate)(NULL, tls, 0, store), TETHER_RESULT_NULL_ARGUMENT);
        EXPECT(X(tether_dps_session_store_certificate)(ds, tls, 0, NULL), TETHER_RESULT_NULL_ARGUMENT);
        EXPECT(X(tether_dps_session_store_certificate)(ds, NULL, 0, store), TETHER_RESULT_INVALID_STATE);
        EXPECT(tether_dps_session_start(ds, 1767225600000ull), TETHER_RESULT_OK);
        EXPECT(tether_dps_session_request_certificate(ds), TETHER_RESULT_INVALID_STATE);
        tether_dps_session_free(ds);
        EXPECT(tether_credential_store_generation(store, &generation), TETHER_RESULT_NOT_FOUND);
    }
    EXPECT(X(tether_client_renew_certificate)(NULL), TETHER_RESULT_NULL_ARGUMENT);
    EXPECT(X(tether_client_renew_certificate)(client), TETHER_RESULT_INVALID_STATE);
    free(chain);
    free(key_bytes);
    tether_client_free(client);
    tether_client_free(sas);
    X(tether_credential_store_free)(store);
    X(tether_credential_store_free)(cb);
    X(tether_credential_store_free)(NULL);
}

int main(int argc, char **argv) {
    tether_tls_config *tls;
    int i;
    if (argc < 3) {
        printf("usage: abuse PKI_DIR ROOT_DER [SEED]\n");
        return 2;
    }
    if (argc > 3) rng_state = strtoull(argv[3], NULL, 0) | 1;
    printf("seed 0x%llx\n", (unsigned long long)rng_state);
    root_der = read_file(argv[2], &root_der_len);
    connection_strings();
    tls = tls_configs(argv[1]);
    clients(tls);
    sessions();
    dps_sessions();
    gateway_faces(argv[1]);
    property_bags();
    dps(tls);
    certificates(tls, argv[1]);
    topics_and_codec();
    audit();
    misc(argv[1]);
    X(tether_tls_config_free)(tls);
    X(tether_connection_string_free)(the_cs);
    free(root_der);
    CHECK(X(tether_live_handles)() == 0);
    for (i = 0; i < nseen; i++) printf("exercised %s\n", seen[i]);
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
