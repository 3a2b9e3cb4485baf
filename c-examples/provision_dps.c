/*
 * provision_dps: ask the Device Provisioning Service which IoT Hub this device belongs to,
 * with a symmetric key from a group enrollment, then print the assignment.
 *
 *   TETHER_DPS_ID_SCOPE=0ne... TETHER_DPS_REGISTRATION_ID=sensor-42 \
 *   TETHER_DPS_GROUP_KEY=<enrollment group key> provision_dps
 *
 * Optional: TETHER_DPS_ENDPOINT (default global.azure-devices-provisioning.net),
 * TETHER_PORT (8883), TETHER_CA_FILE. In production the device key is derived on the
 * production line and the group key never reaches the device; it is derived here to keep
 * the recipe short.
 */
#include "example_common.h"

#include <string.h>

static const char *need(const char *name) {
    const char *value = getenv(name);
    if (value == NULL || value[0] == '\0') {
        fprintf(stderr, "set %s\n", name);
        exit(2);
    }
    return value;
}

int main(void) {
    const char *scope = need("TETHER_DPS_ID_SCOPE");
    const char *registration = need("TETHER_DPS_REGISTRATION_ID");
    const char *group_key = need("TETHER_DPS_GROUP_KEY");
    const char *endpoint = getenv("TETHER_DPS_ENDPOINT");
    const char *ca = getenv("TETHER_CA_FILE");
    uint16_t port = getenv("TETHER_PORT") ? (uint16_t)atoi(getenv("TETHER_PORT")) : 8883;
    tether_tls_config_builder *builder = tether_tls_config_builder_new();
    tether_tls_config *tls = NULL;
    char device_key[64], hub[256], device_id[136];
    size_t len = 0, hub_len = 0, device_id_len = 0;

    /* 1. The device's key for this group enrollment, and the TLS policy. */
    check(tether_dps_derive_key(group_key, registration, device_key, sizeof device_key, &len),
          "derive key");
    if (ca != NULL) check(tether_tls_config_builder_add_ca_file(builder, ca), "CA file");
    check(tether_tls_config_builder_build(builder, &tls), "TLS policy");
    tether_tls_config_builder_free(builder);

    /* 2. Register: connect, register, poll while DPS says 202, within 60 s. */
    check(tether_dps_provision(endpoint, port, scope, registration, device_key, true, tls, 60000, hub,
                               sizeof hub, &hub_len, device_id, sizeof device_id, &device_id_len),
          "provision");
    memset(device_key, 0, sizeof device_key);
    tether_tls_config_free(tls);

    /* 3. Connect to the assigned hub next, e.g. with
          HostName=<hub>;DeviceId=<device id>;SharedAccessKey=<device key>.
          (tether_dps_provision has checked both: a host name, and a device id without ';',
          so a reply cannot add fields to that string.) */
    printf("assigned %s %s\n", hub, device_id);
    return 0;
}
