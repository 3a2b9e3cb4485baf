/* IoT Hub MQTT framing from C: builders into caller buffers, parsers returning spans into
 * the caller's topic, the property-bag iterator, and the codec. Prints one line per check;
 * the Rust test compares the output. */
#include <stdio.h>
#include <string.h>

#include <tether.h>

#define CHECK(call)                                                              \
    do {                                                                         \
        enum tether_result r_ = (call);                                          \
        if (r_ != TETHER_RESULT_OK) {                                            \
            char msg_[256];                                                      \
            size_t n_ = 0;                                                       \
            if (tether_last_error(msg_, sizeof msg_, &n_) != TETHER_RESULT_OK) { \
                msg_[0] = 0;                                                     \
            }                                                                    \
            printf("FAIL %s: %s (%s)\n", #call, tether_result_name((uint32_t)r_), msg_); \
            return 1;                                                            \
        }                                                                        \
    } while (0)

static void print_span(const char *label, tether_span s) {
    printf("%s=%.*s\n", label, (int)s.len, s.ptr ? s.ptr : "");
}

int main(void) {
    char buf[512];
    size_t len = 0;

    CHECK(tether_mqtt_client_id("my_device", "my_module_id", buf, sizeof buf, &len));
    printf("client_id=%s\n", buf);
    CHECK(tether_mqtt_username("myiothub.azure-devices.net", "my_device", NULL, "2020-09-30",
                               "azsdk-c/1.6.0-beta.1", "dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1",
                               buf, sizeof buf, &len));
    printf("username=%s\n", buf);

    /* Too small: nothing written, the size needed reported. */
    char tiny[8] = "unused";
    enum tether_result r = tether_mqtt_client_id("my_device", NULL, tiny, 4, &len);
    printf("too_small=%s needed=%zu kept=%s\n", tether_result_name((uint32_t)r), len, tiny);

    /* Telemetry with a property bag built in a caller buffer. */
    char bag_buf[128];
    tether_property_bag bag;
    CHECK(tether_property_bag_init(&bag, bag_buf, sizeof bag_buf));
    CHECK(tether_property_bag_append(&bag, "key", "value"));
    CHECK(tether_property_bag_append(&bag, "key_two", "value2"));
    CHECK(tether_telemetry_topic("my_device", "my_module_id", bag.buf, bag.len, buf, sizeof buf, &len));
    printf("telemetry=%s\n", buf);
    CHECK(tether_property_bag_init(&bag, bag_buf, sizeof bag_buf));
    CHECK(tether_property_bag_append(&bag, "$.ct", "application/json"));
    CHECK(tether_property_bag_append(&bag, "$.ce", "utf-8"));
    printf("system_bag=%s\n", bag.buf);

    /* A received cloud-to-device topic: iterate its properties and decode them. */
    const char *c2d = "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla&nul&empty=";
    tether_c2d_topic t;
    CHECK(tether_c2d_parse_topic(c2d, strlen(c2d), &t));
    print_span("c2d_device", t.device_id);
    tether_property_iter it;
    tether_property p;
    CHECK(tether_property_iter_init(&it, t.properties.ptr, t.properties.len));
    while ((r = tether_property_iter_next(&it, &p)) == TETHER_RESULT_OK) {
        char key[128], value[128];
        size_t klen = 0, vlen = 0;
        CHECK(tether_property_decode(p.key.ptr, p.key.len, key, sizeof key, &klen));
        if (p.has_value) {
            CHECK(tether_property_decode(p.value.ptr, p.value.len, value, sizeof value, &vlen));
            printf("c2d_property %s=[%s]\n", key, value);
        } else {
            printf("c2d_property %s (null)\n", key);
        }
    }
    printf("c2d_end=%s\n", tether_result_name((uint32_t)r));
    CHECK(tether_property_bag_find(t.properties.ptr, t.properties.len, "abc", &p));
    print_span("found_abc", p.value);

    /* Twin. */
    CHECK(tether_twin_get_topic("id_one", buf, sizeof buf, &len));
    printf("twin_get=%s\n", buf);
    CHECK(tether_twin_patch_reported_topic("id_one", buf, sizeof buf, &len));
    printf("twin_patch=%s\n", buf);
    const char *twin = "$iothub/twin/res/204/?$rid=id_one&$version=16";
    tether_twin_topic tw;
    CHECK(tether_twin_parse_topic(twin, strlen(twin), &tw));
    printf("twin_kind=%u status=%u\n", (unsigned)tw.kind, (unsigned)tw.status);
    print_span("twin_rid", tw.request_id);
    print_span("twin_version", tw.version);
    const char *desired = "$iothub/twin/PATCH/properties/desired/?$version=id_one";
    CHECK(tether_twin_parse_topic(desired, strlen(desired), &tw));
    printf("desired_kind=%u rid_null=%d\n", (unsigned)tw.kind, tw.request_id.ptr == NULL);
    print_span("desired_version", tw.version);

    /* Direct methods. */
    const char *method = "$iothub/methods/POST/TestMethod/?$rid=1";
    tether_method_request m;
    CHECK(tether_method_parse_request_topic(method, strlen(method), &m));
    print_span("method_name", m.name);
    CHECK(tether_method_response_topic(65535, m.request_id.ptr, m.request_id.len, buf, sizeof buf, &len));
    printf("method_response=%s\n", buf);
    r = tether_method_parse_request_topic(twin, strlen(twin), &m);
    printf("not_a_method=%s\n", tether_result_name((uint32_t)r));

    /* DPS. */
    CHECK(tether_dps_username("0neFEEDC0DE", "myRegistrationId", NULL, "c/1.2.3", buf, sizeof buf, &len));
    printf("dps_username=%s\n", buf);
    CHECK(tether_dps_register_topic("1", buf, sizeof buf, &len));
    printf("dps_register=%s\n", buf);
    CHECK(tether_dps_register_payload("myRegistrationId", buf, sizeof buf, &len));
    printf("dps_payload=%s\n", buf);
    const char *dps_reply = "$dps/registrations/res/202/?retry-after=120&$rid=1";
    tether_dps_response dr;
    CHECK(tether_dps_parse_response_topic(dps_reply, strlen(dps_reply), &dr));
    printf("dps_status=%u retry=%u\n", (unsigned)dr.status, (unsigned)dr.retry_after_s);
    const char *body = "{\"operationId\":\"4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d\",\"status\":\"assigning\"}";
    tether_dps_body db;
    CHECK(tether_dps_parse_body((const uint8_t *)body, strlen(body), &db));
    CHECK(tether_dps_poll_topic("2", db.operation_id.ptr, db.operation_id.len, buf, sizeof buf, &len));
    printf("dps_poll=%s\n", buf);

    /* Codec: encode a QoS 1 PUBLISH, decode it back from partial and complete input. */
    uint8_t frame[256];
    size_t frame_len = 0;
    const uint8_t payload[] = {'h', 'i'};
    CHECK(tether_mqtt_encode_publish("devices/my_device/messages/events/", payload, sizeof payload, 1, 7,
                                     false, frame, sizeof frame, &frame_len));
    printf("publish_len=%zu\n", frame_len);
    tether_mqtt_packet pkt;
    size_t used = 0, needed = 0;
    r = tether_mqtt_decode(frame, 3, 0, &pkt, &used, &needed);
    printf("partial=%s needed=%zu\n", tether_result_name((uint32_t)r), needed);
    CHECK(tether_mqtt_decode(frame, frame_len, 0, &pkt, &used, &needed));
    printf("decoded type=%u qos=%u id=%u used=%zu payload=%.*s\n", (unsigned)pkt.packet_type,
           (unsigned)pkt.qos, (unsigned)pkt.packet_id, used, (int)pkt.payload.len,
           (const char *)pkt.payload.ptr);
    r = tether_mqtt_encode_publish("t", payload, sizeof payload, 2, 7, false, frame, sizeof frame, &frame_len);
    printf("qos2=%s\n", tether_result_name((uint32_t)r));
    const uint8_t connack[] = {0x20, 0x02, 0x00, 0x05};
    CHECK(tether_mqtt_decode(connack, sizeof connack, 0, &pkt, &used, &needed));
    printf("connack=%u check=%s\n", (unsigned)pkt.connack_return_code,
           tether_result_name((uint32_t)tether_mqtt_connack_check(pkt.connack_return_code)));
    return 0;
}
