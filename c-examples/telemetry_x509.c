/*
 * telemetry_x509: send telemetry as a device that authenticates with an X.509 certificate
 * (mutual TLS; the certificate's CN is the device id).
 *
 *   telemetry_x509 HOST DEVICE_ID CERT_FILE KEY_FILE [CA_FILE [PORT [GATEWAY_HOST]]]
 *
 * GATEWAY_HOST: connect through a gateway (or a local stand-in) instead of HOST itself.
 * The TLS policy is built explicitly here: IoT Hub defaults, the device certificate and
 * key, and an extra CA for a local hub.
 */
#include "example_common.h"

#include <string.h>

int main(int argc, char **argv) {
    tether_tls_config_builder *builder;
    tether_tls_config *tls = NULL;
    tether_client *client = NULL;
    tether_client_options options = tether_client_options_default();
    tether_event event;
    char connection_string[512];
    const char *body = "{\"status\":\"online\"}";
    uint64_t id = 0;

    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST DEVICE_ID CERT_FILE KEY_FILE [CA_FILE [PORT [GATEWAY_HOST]]]\n",
                argv[0]);
        return 2;
    }

    /* 1. Create and configure: the TLS policy carries the device's certificate. */
    builder = tether_tls_config_builder_new();
    check(tether_tls_config_builder_set_client_cert_files(builder, argv[3], argv[4]), "certificate");
    if (argc > 5) check(tether_tls_config_builder_add_ca_file(builder, argv[5]), "CA file");
    check(tether_tls_config_builder_build(builder, &tls), "TLS policy");
    tether_tls_config_builder_free(builder);
    if (argc > 6) options.port = (uint16_t)atoi(argv[6]);
    snprintf(connection_string, sizeof connection_string, "HostName=%s;DeviceId=%s;x509=true%s%s",
             argv[1], argv[2], argc > 7 ? ";GatewayHostName=" : "", argc > 7 ? argv[7] : "");
    check(tether_client_new(connection_string, tls, &options, &client), "client");
    tether_tls_config_free(tls); /* the client keeps its own reference */

    /* 2. Connect. */
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
