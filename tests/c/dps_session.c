/* DPS registration from firmware with its own socket: drives tether_dps_session_* over a
 * plain POSIX TCP socket and clock, then prints the outcome:
 *   needed <hub length> <device id length>   (asked with a 5-byte hub buffer)
 *   assigned <hub> <device id>
 *   failed <result name> <message>
 * Configured from TETHER_PORT (on 127.0.0.1), TETHER_DPS_ENDPOINT (the TLS server name),
 * TETHER_DPS_ID_SCOPE, TETHER_DPS_REGISTRATION_ID, TETHER_DPS_GROUP_KEY and TETHER_CA_FILE.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tether.h>

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sends everything the registration has queued. */
static int flush(tether_dps_session *dps, int fd) {
    uint8_t buf[1024];
    size_t n = 0;
    do {
        if (tether_dps_session_poll_output(dps, buf, sizeof buf, &n) != TETHER_RESULT_OK) return -1;
        for (size_t off = 0; off < n;) {
            ssize_t w = send(fd, buf + off, n - off, 0);
            if (w <= 0) return -1;
            off += (size_t)w;
        }
    } while (n > 0);
    return 0;
}

static int open_socket(uint16_t port) {
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(void) {
    const char *port = getenv("TETHER_PORT");
    const char *ca = getenv("TETHER_CA_FILE");
    const char *endpoint = getenv("TETHER_DPS_ENDPOINT");
    const char *scope = getenv("TETHER_DPS_ID_SCOPE");
    const char *registration = getenv("TETHER_DPS_REGISTRATION_ID");
    const char *group_key = getenv("TETHER_DPS_GROUP_KEY");
    tether_tls_config_builder *builder = tether_tls_config_builder_new();
    tether_tls_config *tls = NULL;
    tether_dps_session *dps = NULL;
    char device_key[64], hub[TETHER_DPS_HUB_CAP], device_id[TETHER_DPS_DEVICE_ID_CAP];
    char message[512];
    size_t len = 0, hub_len = 0, device_id_len = 0;
    uint32_t status = TETHER_DPS_STATUS_IN_PROGRESS;
    uint8_t in[2048];
    int fd;

    if (!port || !ca || !scope || !registration || !group_key) return 2;
    if (tether_dps_derive_key(group_key, registration, device_key, sizeof device_key, &len) !=
            TETHER_RESULT_OK ||
        tether_tls_config_builder_add_ca_file(builder, ca) != TETHER_RESULT_OK ||
        tether_tls_config_builder_build(builder, &tls) != TETHER_RESULT_OK)
        return 3;
    tether_tls_config_builder_free(builder);
    if (tether_dps_session_new(endpoint, scope, registration, device_key, true, tls, 20000,
                               &dps) != TETHER_RESULT_OK)
        return 4;
    memset(device_key, 0, sizeof device_key);
    tether_tls_config_free(tls);

    fd = open_socket((uint16_t)atoi(port));
    if (fd < 0) return 5;
    if (tether_dps_session_start(dps, now_ms()) != TETHER_RESULT_OK) return 6;
    while (status == TETHER_DPS_STATUS_IN_PROGRESS) {
        uint64_t deadline = 0;
        struct pollfd p;
        int wait_ms = 1000, ready;
        if (flush(dps, fd) != 0) {
            tether_dps_session_connection_lost(dps);
            break;
        }
        if (tether_dps_session_next_deadline(dps, &deadline) == TETHER_RESULT_OK) {
            uint64_t now = now_ms();
            wait_ms = deadline > now ? (int)(deadline - now) : 0;
        }
        p.fd = fd;
        p.events = POLLIN;
        p.revents = 0;
        ready = poll(&p, 1, wait_ms);
        if (ready > 0) {
            ssize_t n = recv(fd, in, sizeof in, 0);
            if (n <= 0)
                tether_dps_session_connection_lost(dps);
            else
                tether_dps_session_handle_input(dps, in, (size_t)n, now_ms());
        } else if (ready == 0) {
            tether_dps_session_handle_timeout(dps, now_ms());
        } else {
            return 7;
        }
        if (tether_dps_session_status(dps, &status) != TETHER_RESULT_OK) return 8;
    }
    (void)flush(dps, fd); /* the DISCONNECT or an alert */
    close(fd);

    if (status == TETHER_DPS_STATUS_ASSIGNED) {
        /* Too small for the hub: nothing written, both lengths needed reported. */
        hub[0] = device_id[0] = 'x';
        if (tether_dps_session_result(dps, hub, 5, &hub_len, device_id, sizeof device_id,
                                      &device_id_len) != TETHER_RESULT_BUFFER_TOO_SMALL ||
            hub[0] != 'x' || device_id[0] != 'x')
            return 10;
        printf("needed %zu %zu\n", hub_len, device_id_len);
    }
    tether_result result = tether_dps_session_result(dps, hub, sizeof hub, &hub_len, device_id,
                                                     sizeof device_id, &device_id_len);
    if (result == TETHER_RESULT_OK) {
        printf("assigned %s %s\n", hub, device_id);
    } else {
        if (tether_last_error(message, sizeof message, &len) != TETHER_RESULT_OK) return 9;
        printf("failed %s %s\n", tether_result_name(result), message);
    }
    tether_dps_session_free(dps);
    return 0;
}
