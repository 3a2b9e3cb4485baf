/*
 * telemetry_sas: send telemetry as a device that authenticates with a SAS key.
 *
 *   TETHER_CONNECTION_STRING='HostName=...;DeviceId=...;SharedAccessKey=...' telemetry_sas [COUNT]
 *
 * Optional: TETHER_CA_FILE (extra trusted CA, e.g. a local hub's), TETHER_PORT (default 8883).
 * The client makes and renews its SAS tokens itself, and re-sends unacknowledged messages
 * after a reconnection.
 */
#include "example_common.h"

#include <string.h>

int main(int argc, char **argv) {
    tether_client *client = NULL;
    tether_event event;
    const char *keys[] = {"$.ct", "$.ce", "sensor"};
    const char *values[] = {"application/json", "utf-8", "thermo-1"};
    int count = argc > 1 ? atoi(argv[1]) : 5;
    int acked = 0;
    int i;

    /* 1. Create and configure: everything comes from the environment. */
    check(tether_client_new_from_env(&client), "client");

    /* 2. Connect (TLS 1.2 with the hub's suites, then MQTT CONNECT with a fresh token). */
    check(tether_client_connect(client, 30000), "connect");

    /* 3. Send, then wait for the hub's acknowledgements. */
    for (i = 0; i < count; i++) {
        char body[64];
        uint64_t id = 0;
        snprintf(body, sizeof body, "{\"temperature\":%d.5,\"seq\":%d}", 20 + i % 5, i);
        check(tether_client_send_telemetry(client, (const uint8_t *)body, strlen(body), keys, values,
                                           3, 1, &id),
              "send");
        printf("sent message %llu: %s\n", (unsigned long long)id, body);
    }
    while (acked < count) {
        check(tether_client_poll(client, 10000, &event), "poll");
        if (event.kind == TETHER_EVENT_TELEMETRY_ACKED) {
            acked++;
        } else if (event.kind == TETHER_EVENT_NONE) {
            fprintf(stderr, "no acknowledgement within 10 s\n");
            return 1;
        } else if (event.kind == TETHER_EVENT_DISCONNECTED && !event.will_retry) {
            check(event.error, "connection");
        }
    }
    printf("acked %d\n", acked);

    /* 4. Disconnect. */
    tether_client_free(client);
    return 0;
}
