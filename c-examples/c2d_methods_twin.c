/*
 * c2d_methods_twin: a device that reads its twin, reports a property, prints
 * cloud-to-device messages and desired-property patches, and answers direct methods.
 *
 *   TETHER_CONNECTION_STRING=... c2d_methods_twin [EVENTS]
 *
 * Stops after EVENTS messages, method calls and patches (default: runs until killed).
 */
#include "example_common.h"

#include <string.h>

int main(int argc, char **argv) {
    tether_client *client = NULL;
    tether_event event;
    char rid[64];
    size_t rid_len = 0;
    const char *reported = "{\"firmware\":\"1.2.3\"}";
    long wanted = argc > 1 ? atol(argv[1]) : -1;
    long seen = 0;
    size_t i;

    /* 1. Create and configure, and say what we want to receive. */
    check(tether_client_new_from_env(&client), "client");
    check(tether_client_subscribe(client, TETHER_SUBSCRIBE_C2D | TETHER_SUBSCRIBE_METHODS |
                                              TETHER_SUBSCRIBE_TWIN),
          "subscribe");

    /* 2. Connect. */
    check(tether_client_connect(client, 30000), "connect");

    /* 3. Twin: read it, report a property. Answers arrive as events below. */
    check(tether_client_twin_get(client, rid, sizeof rid, &rid_len), "twin get");
    check(tether_client_twin_patch_reported(client, (const uint8_t *)reported, strlen(reported), rid,
                                            sizeof rid, &rid_len),
          "twin patch");
    printf("ready\n");
    fflush(stdout);

    while (wanted < 0 || seen < wanted) {
        check(tether_client_poll(client, 1000, &event), "poll");
        switch (event.kind) {
        case TETHER_EVENT_C2D:
            printf("c2d %.*s", (int)event.payload_len, (const char *)event.payload);
            for (i = 0; i < event.property_count; i++) {
                const char *key, *value;
                check(tether_client_event_property(client, i, &key, &value), "property");
                printf(" %s=%s", key, value ? value : "(null)");
            }
            printf("\n");
            seen++;
            break;
        case TETHER_EVENT_METHOD_REQUEST:
            printf("method %s %.*s\n", event.name, (int)event.payload_len, (const char *)event.payload);
            check(tether_client_respond_method(client, event.request_id, 200,
                                               (const uint8_t *)"{\"done\":true}", 13),
                  "method response");
            seen++;
            break;
        case TETHER_EVENT_TWIN_RESPONSE:
            printf("twin %u %.*s\n", (unsigned)event.status, (int)event.payload_len,
                   event.payload ? (const char *)event.payload : "");
            break;
        case TETHER_EVENT_DESIRED_PATCH:
            printf("desired v%llu %.*s\n", (unsigned long long)event.version, (int)event.payload_len,
                   (const char *)event.payload);
            seen++;
            break;
        case TETHER_EVENT_DISCONNECTED:
            if (!event.will_retry) check(event.error, "connection");
            break;
        default:
            break;
        }
        fflush(stdout);
    }

    /* 4. Disconnect. */
    tether_client_free(client);
    return 0;
}
