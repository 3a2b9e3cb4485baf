/* Prints tether's defaults as C sees them (tests/defaults.rs compares them with the other
 * front ends): line 1 every field of struct tether_defaults, line 2 the fields of
 * tether_client_options_default(), each as one JSON object. */
#include <stdio.h>

#include "tether.h"

#define FIELD(s, name, last) printf("\"%s\":%llu%s", #name, (unsigned long long)(s)->name, (last) ? "}\n" : ",")

int main(void) {
    const tether_defaults *d = tether_defaults_get();
    tether_client_options o = tether_client_options_default();
    if (d == NULL || d != tether_defaults_get()) {
        fprintf(stderr, "tether_defaults_get() must return the same static struct each time\n");
        return 1;
    }
    printf("{");
    FIELD(d, port, 0);
    FIELD(d, keep_alive_secs, 0);
    FIELD(d, max_keep_alive_secs, 0);
    FIELD(d, token_ttl_secs, 0);
    FIELD(d, min_token_ttl_secs, 0);
    FIELD(d, renewal_margin_min_secs, 0);
    FIELD(d, renewal_margin_percent, 0);
    FIELD(d, max_inflight, 0);
    FIELD(d, max_unsent_bytes, 0);
    FIELD(d, connect_timeout_ms, 0);
    FIELD(d, retry_min_ms, 0);
    FIELD(d, retry_max_ms, 0);
    FIELD(d, retry_jitter_ms, 0);
    FIELD(d, dps_timeout_ms, 0);
    FIELD(d, dps_poll_interval_ms, 0);
    FIELD(d, dps_poll_max_ms, 0);
    FIELD(d, tls_check_timeout_ms, 1);
    printf("{");
    FIELD(&o, port, 0);
    FIELD(&o, keep_alive_secs, 0);
    FIELD(&o, token_ttl_secs, 0);
    FIELD(&o, max_inflight, 0);
    FIELD(&o, connect_timeout_ms, 0);
    FIELD(&o, retry_max_ms, 0);
    FIELD(&o, websocket_port, 0);
    FIELD(&o, transport, 1);
    return 0;
}
