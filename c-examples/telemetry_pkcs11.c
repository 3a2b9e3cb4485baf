/*
 * telemetry_pkcs11: send telemetry as an X.509 device whose private key never leaves its
 * hardware token (HSM, TPM 2.0 through tpm2-pkcs11, secure element; SoftHSM for tests).
 * The token signs the TLS handshake; the certificate is read from the token.
 *
 *   telemetry_pkcs11 HOST DEVICE_ID MODULE URI [CA_FILE [PORT [GATEWAY_HOST]]]
 *       builds the TLS policy explicitly; the PIN comes from a callback (here it reads
 *       TETHER_PKCS11_PIN, as a PIN prompt or a sealed file would supply it);
 *   telemetry_pkcs11
 *       everything from the environment: TETHER_CONNECTION_STRING (with x509=true),
 *       TETHER_PKCS11_MODULE, TETHER_PKCS11_URI, TETHER_PKCS11_PIN, TETHER_CA_FILE,
 *       TETHER_PORT.
 *
 * URI: RFC 7512, e.g. "pkcs11:token=device;object=device-key" (see docs/pkcs11.md).
 */
#include "example_common.h"

#include <string.h>

/* Supplies the PIN at each log-in; tether wipes the buffer after use. */
static int pin_from_environment(void *user, uint8_t *pin, size_t pin_cap, size_t *pin_len) {
    const char *value = getenv("TETHER_PKCS11_PIN");
    size_t len;
    (void)user;
    if (value == NULL) return -1;
    len = strlen(value);
    if (len > pin_cap) return -1;
    memcpy(pin, value, len);
    *pin_len = len;
    return 0;
}

static tether_client *client_from_arguments(int argc, char **argv) {
    tether_tls_config_builder *builder;
    tether_tls_config *tls = NULL;
    tether_client *client = NULL;
    tether_client_options options = tether_client_options_default();
    char connection_string[512];

    builder = tether_tls_config_builder_new();
    check(tether_tls_config_builder_set_client_pkcs11_pin_callback(builder, argv[3], argv[4],
                                                                   pin_from_environment, NULL),
          "PKCS#11 key");
    if (argc > 5) check(tether_tls_config_builder_add_ca_file(builder, argv[5]), "CA file");
    check(tether_tls_config_builder_build(builder, &tls), "TLS policy");
    tether_tls_config_builder_free(builder);
    if (argc > 6) options.port = (uint16_t)atoi(argv[6]);
    snprintf(connection_string, sizeof connection_string, "HostName=%s;DeviceId=%s;x509=true%s%s",
             argv[1], argv[2], argc > 7 ? ";GatewayHostName=" : "", argc > 7 ? argv[7] : "");
    check(tether_client_new(connection_string, tls, &options, &client), "client");
    tether_tls_config_free(tls); /* the client keeps its own reference */
    return client;
}

int main(int argc, char **argv) {
    tether_client *client = NULL;
    tether_event event;
    const char *body = "{\"key\":\"in hardware\"}";
    uint64_t id = 0;

    if (argc != 1 && argc < 5) {
        fprintf(stderr, "usage: %s [HOST DEVICE_ID MODULE URI [CA_FILE [PORT [GATEWAY_HOST]]]]\n",
                argv[0]);
        return 2;
    }

    /* 1. Create and configure: the token's key and certificate, from arguments or the
     *    environment. */
    if (argc == 1) {
        check(tether_client_new_from_env(&client), "client from the environment");
    } else {
        client = client_from_arguments(argc, argv);
    }

    /* 2. Connect: the token signs the handshake. */
    check(tether_client_connect(client, 30000), "connect");

    /* 3. Send one message and wait for its acknowledgement. */
    check(tether_client_send_telemetry(client, (const uint8_t *)body, strlen(body), NULL, NULL, 0, 1,
                                       &id),
          "send");
    do {
        check(tether_client_poll(client, 10000, &event), "poll");
        if (event.kind == TETHER_EVENT_NONE) {
            fprintf(stderr, "no acknowledgement within 10 s\n");
            return 1;
        }
    } while (!(event.kind == TETHER_EVENT_TELEMETRY_ACKED && event.message_id == id));
    printf("acked %llu\n", (unsigned long long)id);

    /* 4. Disconnect. */
    tether_client_free(client);
    return 0;
}
