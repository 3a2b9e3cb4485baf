//! IoT Hub MQTT framing from a C program: tests/c/mqtt_framing.c, compiled against
//! include/tether.h with every warning an error and linked against libtether.a, prints what
//! the builders, parsers and codec give; this test compares it line by line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, run, temp_dir};

/// target/<profile>, where `cargo build --lib` left libtether.a.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libtether.a").exists(),
        "libtether.a not found in {}: `cargo test` builds only the rlib; run \
         `cargo build --lib` first (.ci/test does)",
        dir.display()
    );
    dir
}

const EXPECTED: &str = "\
client_id=my_device/my_module_id
username=myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1&model-id=dtmi%3AYOUR_COMPANY_NAME_HERE%3Asample_device%3B1
too_small=TETHER_RESULT_BUFFER_TOO_SMALL needed=9 kept=unused
telemetry=devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2
system_bag=%24.ct=application%2Fjson&%24.ce=utf-8
c2d_device=useragent_c
c2d_property $.to=[/devices/useragent_c/messages/deviceBound]
c2d_property abc=[123]
c2d_property ghi=[/some/thing]
c2d_property jkl=[/some/thing/?bla=bla]
c2d_property nul (null)
c2d_property empty=[]
c2d_end=TETHER_RESULT_NOT_FOUND
found_abc=123
twin_get=$iothub/twin/GET/?$rid=id_one
twin_patch=$iothub/twin/PATCH/properties/reported/?$rid=id_one
twin_kind=1 status=204
twin_rid=id_one
twin_version=16
desired_kind=2 rid_null=1
desired_version=id_one
method_name=TestMethod
method_response=$iothub/methods/res/65535/?$rid=1
not_a_method=TETHER_RESULT_TOPIC_INVALID
dps_username=0neFEEDC0DE/registrations/myRegistrationId/api-version=2019-03-31&ClientVersion=c/1.2.3
dps_register=$dps/registrations/PUT/iotdps-register/?$rid=1
dps_payload={\"registrationId\":\"myRegistrationId\"}
dps_status=202 retry=120
dps_poll=$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d
publish_len=42
partial=TETHER_RESULT_MQTT_NEED_MORE_DATA needed=39
decoded type=3 qos=1 id=7 used=42 payload=hi
qos2=TETHER_RESULT_MQTT_QOS_UNSUPPORTED
connack=5 check=TETHER_RESULT_NOT_AUTHORIZED
";

#[test]
fn c_program_builds_and_parses_iot_hub_topics_and_packets() {
    require("cc", "gcc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = temp_dir("mqtt-c").join("mqtt_framing");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join("tests/c/mqtt_framing.c"))
        .arg("-o")
        .arg(&exe)
        .arg(lib_dir().join("libtether.a"))
        .args(common::STATIC_LIBS));
    let out = Command::new(&exe).output().expect("the C program runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C program failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (got, want)) in stdout.lines().zip(EXPECTED.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(stdout.lines().count(), EXPECTED.lines().count(), "{stdout}");
}
