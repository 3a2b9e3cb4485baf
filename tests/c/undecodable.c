/* The C face of an undecodable message: polls a connection whose broker sends a C2D message
 * with a malformed property bag, then a good one, and prints what each poll returned:
 *   undecodable <topic> <payload> <result name> <message>
 *   c2d <payload>
 *   disconnected <result name>
 * Configured from TETHER_CONNECTION_STRING, TETHER_CA_FILE and TETHER_PORT. */
#include <stdio.h>
#include <tether.h>

int main(void) {
    tether_client *client = NULL;
    tether_event event;
    char message[512];
    size_t len = 0;
    int c2d = 0;
    if (tether_client_new_from_env(&client) != TETHER_RESULT_OK) return 2;
    if (tether_client_connect(client, 20000) != TETHER_RESULT_OK) return 3;
    for (int i = 0; i < 200 && !c2d; i++) {
        if (tether_client_poll(client, 100, &event) != TETHER_RESULT_OK) return 4;
        switch (event.kind) {
        case TETHER_EVENT_UNDECODABLE:
            if (tether_last_error(message, sizeof message, &len) != TETHER_RESULT_OK) return 5;
            printf("undecodable %s %.*s %s %s\n", event.name, (int)event.payload_len,
                   (const char *)event.payload, tether_result_name(event.error), message);
            break;
        case TETHER_EVENT_C2D:
            printf("c2d %.*s\n", (int)event.payload_len, (const char *)event.payload);
            c2d = 1;
            break;
        case TETHER_EVENT_DISCONNECTED:
            printf("disconnected %s\n", tether_result_name(event.error));
            break;
        default:
            break;
        }
        fflush(stdout);
    }
    tether_client_free(client);
    return c2d ? 0 : 6;
}
