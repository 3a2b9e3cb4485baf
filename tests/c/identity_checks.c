/*
 * Identity through the C ABI: published vectors, buffer rules, and one distinct result per
 * kind of bad input. Prints the SAS tokens it made (one per line, prefixed "TOKEN ") so the
 * driving Rust test can check them independently, then "N passed, M failed".
 *
 *   identity_checks CERT_DER_FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether.h>

static int passed, failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            passed++;                                                        \
        } else {                                                             \
            failed++;                                                        \
            printf("FAILED line %d: %s\n", __LINE__, #cond);                 \
        }                                                                    \
    } while (0)

#define KEY "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
#define GROUP_KEY                                                            \
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="

static void sas_tokens(void) {
    char out[TETHER_SAS_TOKEN_MAX_LEN + 1];
    char small[16];
    size_t len = 0, needed = 0;
    const char *device = "myiothub.azure-devices.net/devices/my_device";
    const char *prefix = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig=";

    CHECK(tether_sas_token(device, KEY, NULL, 1578941692, out, sizeof out, &len) ==
          TETHER_RESULT_OK);
    CHECK(len == strlen(out));
    CHECK(strncmp(out, prefix, strlen(prefix)) == 0);
    CHECK(strcmp(out + len - strlen("&se=1578941692"), "&se=1578941692") == 0);
    printf("TOKEN %s\n", out);

    CHECK(tether_sas_token("myiothub.azure-devices.net/devices/my_device/modules/my_module", KEY,
                           "owner", 1578941692, out, sizeof out, &len) == TETHER_RESULT_OK);
    printf("TOKEN %s\n", out);

    /* Too small: nothing written, size reported, and the size is enough. */
    memset(small, 'x', sizeof small);
    CHECK(tether_sas_token(device, KEY, NULL, 1578941692, small, sizeof small, &needed) ==
          TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(needed > sizeof small);
    CHECK(small[0] == 'x' && small[15] == 'x');
    CHECK(tether_sas_token(device, KEY, NULL, 1578941692, NULL, 0, &needed) ==
          TETHER_RESULT_BUFFER_TOO_SMALL);
    {
        char *exact = malloc(needed + 1);
        CHECK(tether_sas_token(device, KEY, NULL, 1578941692, exact, needed + 1, &len) ==
              TETHER_RESULT_OK);
        CHECK(len == needed);
        free(exact);
    }

    /* Each bad input has its own result. */
    CHECK(tether_sas_token(NULL, KEY, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_sas_token(device, NULL, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_sas_token(device, KEY, NULL, 1, out, sizeof out, NULL) ==
          TETHER_RESULT_NULL_ARGUMENT);
    CHECK(tether_sas_token("h/devices/\xff", KEY, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_INVALID_UTF8);
    CHECK(tether_sas_token("h/devices/", KEY, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_sas_token("h/devices/my device", KEY, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_sas_token("h/devices/a/b", KEY, NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_sas_token(device, "not*base64", NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_SAS_KEY_INVALID);
    CHECK(tether_sas_token(device, "", NULL, 1, out, sizeof out, &len) ==
          TETHER_RESULT_SAS_KEY_INVALID);
    CHECK(tether_sas_token(device, KEY, "bad name", 1, out, sizeof out, &len) ==
          TETHER_RESULT_INVALID_ARGUMENT);
    {
        size_t n = 1u << 20;
        char *giant = malloc(n + 1);
        memset(giant, 'a', n);
        giant[n] = '\0';
        CHECK(tether_sas_token(giant, KEY, NULL, 1, out, sizeof out, &len) ==
              TETHER_RESULT_ID_INVALID);
        CHECK(tether_sas_token(device, giant, NULL, 1, out, sizeof out, &len) ==
              TETHER_RESULT_SAS_KEY_INVALID);
        free(giant);
    }
    {
        char msg[512];
        CHECK(tether_sas_token(device, "secretXX*", NULL, 1, out, sizeof out, &len) ==
              TETHER_RESULT_SAS_KEY_INVALID);
        CHECK(tether_last_error(msg, sizeof msg, &len) == TETHER_RESULT_OK);
        CHECK(strstr(msg, "secret") == NULL); /* never the key */
    }
}

static void dps(void) {
    char out[TETHER_DPS_DERIVED_KEY_LEN + 1];
    size_t len = 0;
    CHECK(tether_dps_derive_key(GROUP_KEY, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", out,
                                sizeof out, &len) == TETHER_RESULT_OK);
    CHECK(strcmp(out, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=") == 0);
    CHECK(len == TETHER_DPS_DERIVED_KEY_LEN);
    CHECK(tether_dps_derive_key(GROUP_KEY, "sn 1", out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_dps_derive_key("!!", "sn1", out, sizeof out, &len) ==
          TETHER_RESULT_SAS_KEY_INVALID);
    CHECK(tether_dps_derive_key(GROUP_KEY, "sn1", out, 44, &len) ==
          TETHER_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == 44);
}

static void connection_strings(void) {
    tether_connection_string *cs = NULL;
    char out[TETHER_SAS_TOKEN_MAX_LEN + 1];
    size_t len = 0;
    CHECK(tether_connection_string_parse(
              "HostName=h.example;DeviceId=dev1;SharedAccessKey=" KEY, &cs) == TETHER_RESULT_OK);
    CHECK(tether_connection_string_device_id(cs, out, sizeof out, &len) == TETHER_RESULT_OK);
    CHECK(strcmp(out, "dev1") == 0);
    CHECK(tether_connection_string_module_id(cs, out, sizeof out, &len) ==
          TETHER_RESULT_NOT_FOUND);
    CHECK(tether_connection_string_auth(cs) == TETHER_AUTH_SAS_KEY);
    CHECK(tether_connection_string_sas_token(cs, 1800000000, 3600, out, sizeof out, &len) ==
          TETHER_RESULT_OK);
    CHECK(strstr(out, "&se=1800003600") != NULL);
    CHECK(tether_connection_string_sas_token(cs, 0, 3600, out, sizeof out, &len) ==
          TETHER_RESULT_CLOCK_NOT_SET);
    tether_connection_string_free(cs);
    tether_connection_string_free(NULL);
    cs = NULL;
    CHECK(tether_connection_string_parse("HostName=h;DeviceId=d;x509=true;SharedAccessKey=AAAA",
                                         &cs) == TETHER_RESULT_CONNECTION_STRING_INVALID);
    CHECK(cs == NULL);
    CHECK(tether_connection_string_parse(NULL, &cs) == TETHER_RESULT_NULL_ARGUMENT);
}

/* Every character IoT Hub allows in ids: a token, a client id; a topic refuses '+' and '#'
   naming MQTT's rule, and a connection string cannot carry ';'. */
static void hub_id_characters(void) {
    char out[TETHER_SAS_TOKEN_MAX_LEN + 1];
    char message[512];
    size_t len = 0;
    tether_connection_string *cs = NULL;
    CHECK(tether_sas_token("myiothub.azure-devices.net/devices/a-:.+%_#*?!(),=@;$'", KEY, NULL,
                           1578941692, out, sizeof out, &len) == TETHER_RESULT_OK);
    CHECK(strstr(out, "sr=myiothub.azure-devices.net%2Fdevices%2F"
                      "a-%3A.%2B%25_%23%2A%3F%21%28%29%2C%3D%40%3B%24%27&sig=") != NULL);
    printf("TOKEN %s\n", out);
    CHECK(tether_mqtt_client_id("d+#;", "m$'@", out, sizeof out, &len) == TETHER_RESULT_OK);
    CHECK(strcmp(out, "d+#;/m$'@") == 0);
    CHECK(tether_telemetry_topic("d;(1)", NULL, "", 0, out, sizeof out, &len) ==
          TETHER_RESULT_OK);
    CHECK(strcmp(out, "devices/d;(1)/messages/events/") == 0);
    CHECK(tether_telemetry_topic("sensor+1", NULL, "", 0, out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_last_error(message, sizeof message, &len) == TETHER_RESULT_OK);
    CHECK(strstr(message, "MQTT topic names cannot contain '+' or '#'") != NULL);
    CHECK(tether_c2d_subscribe_topic("sensor#1", out, sizeof out, &len) ==
          TETHER_RESULT_ID_INVALID);
    CHECK(tether_connection_string_parse(
              "HostName=h.example;DeviceId=a;b;SharedAccessKey=" KEY, &cs) ==
          TETHER_RESULT_CONNECTION_STRING_INVALID);
    CHECK(cs == NULL);
    CHECK(tether_last_error(message, sizeof message, &len) == TETHER_RESULT_OK);
    CHECK(strstr(message, "a connection string cannot hold ';'") != NULL);
}

static void thumbprints(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char der[8192];
    size_t n = f ? fread(der, 1, sizeof der, f) : 0;
    char out[65];
    size_t len = 0;
    if (f) fclose(f);
    CHECK(n > 0);
    CHECK(tether_x509_thumbprint(der, n, TETHER_THUMBPRINT_SHA256, out, sizeof out, &len) ==
          TETHER_RESULT_OK);
    printf("SHA256 %s\n", out);
    CHECK(tether_x509_thumbprint(der, n, TETHER_THUMBPRINT_SHA1, out, sizeof out, &len) ==
          TETHER_RESULT_OK);
    printf("SHA1 %s\n", out);
    CHECK(tether_x509_check_identity(der, n, "my-device", NULL) == TETHER_RESULT_OK);
    CHECK(tether_x509_check_identity(der, n, "someone-else", NULL) ==
          TETHER_RESULT_CERT_DEVICE_MISMATCH);
    CHECK(tether_x509_check_validity(der, n, 4102444800) == TETHER_RESULT_CERT_EXPIRED);
    CHECK(tether_x509_thumbprint(der, 10, TETHER_THUMBPRINT_SHA1, out, sizeof out, &len) ==
          TETHER_RESULT_CERT_MALFORMED);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    sas_tokens();
    dps();
    connection_strings();
    hub_id_characters();
    thumbprints(argv[1]);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
