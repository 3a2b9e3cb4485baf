"""The web view (`tether hub --web`) in a real browser: headless Debian Chromium driven by
Selenium through chromedriver, against a running stand-in, with devices written with the
official Azure IoT Python SDK (azure-iot-device).

argv: login_url ca sas_port host_name key_sensor1 screenshot_dir
Prints "ok: ..." per check; any failure raises (non-zero exit). Started by tests/web.rs.
"""
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

login, ca, port, host, key1, shots = sys.argv[1:7]
port = int(port)
WAIT = 60  # seconds; the machine is shared and slow

original = mqtt.Client.connect


def connect(self, *a, **k):
    # The SDK always dials 8883; the stand-in listens elsewhere.
    k["port"] = port
    return original(self, *a[:1], *a[2:], **k)


mqtt.Client.connect = connect


def ok(what):
    print("ok:", what, flush=True)


class Device:
    """An SDK device that records what reaches it and answers methods (not `hang`)."""

    def __init__(self, conn):
        self.events = queue.Queue()
        # The stand-in is on this machine: GatewayHostName, as for IoT Edge.
        self.client = IoTHubDeviceClient.create_from_connection_string(
            conn + ";GatewayHostName=localhost", server_verification_cert=open(ca).read(), connection_retry=False
        )
        self.client.on_method_request_received = self.on_method
        self.client.on_twin_desired_properties_patch_received = lambda p: self.events.put(("desired", p))
        self.client.on_message_received = lambda m: self.events.put(
            ("c2d", m.data.decode(), dict(m.custom_properties)))
        self.client.connect()

    def on_method(self, req):
        self.events.put(("method", req.name, req.payload))
        if req.name != "hang":
            self.client.send_method_response(MethodResponse.create_from_method_request(
                req, 200, {"echo": req.payload, "method": req.name}))

    def expect(self, kind):
        deadline = time.time() + WAIT
        while time.time() < deadline:
            try:
                ev = self.events.get(timeout=1)
            except queue.Empty:
                continue
            if ev[0] == kind:
                return ev
        raise AssertionError(f"the device got no {kind} within {WAIT} s")


profile = tempfile.mkdtemp(prefix="tether-web-chromium-")
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--window-size=1280,800", f"--user-data-dir={profile}"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
# The devices and registry tables are rebuilt when the list changes: an element found a
# moment ago may be gone, so waits look again.
wait = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))


def el(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def click(css):
    """Clicks the element, found again if it was replaced meanwhile."""
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def text_of(css):
    """The element's text, found again if it was replaced meanwhile."""
    return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).text or " ")


def text_in(css, needle):
    """Waits until the element's text contains `needle`; answers the text."""
    try:
        return wait.until(lambda d: (lambda t: t if needle in t else None)(
            d.find_element(By.CSS_SELECTOR, css).text))
    except Exception:
        raise AssertionError(f"{css} never showed {needle!r}; it shows {text_of(css)!r}")


def tab(view):
    el(f'#tabs button[data-view="{view}"]').click()
    wait.until(lambda d: d.find_element(By.ID, "view-" + view).is_displayed())


def fill(css, value):
    e = el(css)
    e.clear()
    e.send_keys(value)


def shot(name):
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def refused_with(conn, what):
    """The stand-in reads its registry file again within seconds: a connection with `conn`
    must be refused by then."""
    deadline = time.time() + WAIT
    while True:
        try:
            Device(conn).client.shutdown()
        except Exception as e:
            ok("registry: %s (%s)" % (what, type(e).__name__))
            return
        assert time.time() < deadline, "still connects: " + what
        time.sleep(1)


def fill_device(device):
    fill("#device", device)
    # Close the id suggestions (a datalist) so that they cover no button.
    el("#device").send_keys(Keys.ESCAPE)


try:
    # Before the login URL: the API refuses, and the page says why.
    base = login.split("/login")[0]
    driver.get(base + "/")
    text_in("#banner", "Not signed in")
    ok("without the session the API answers 401 and the page says so")
    driver.get(login)
    wait.until(lambda d: "sensor-1" in d.find_element(By.ID, "devices-table").text)
    assert "SharedAccessKey" not in driver.page_source and key1 not in driver.page_source
    ok("login sets the session; the devices view lists the registry and shows no key")

    # Devices: sensor-1 connects and shows as connected.
    device = Device(f"HostName={host};DeviceId=sensor-1;SharedAccessKey={key1}")
    row = "#device-row-sensor-1"
    text_in(row, "connected")
    wait.until(lambda d: "disconnected" not in d.find_element(By.CSS_SELECTOR, row).text)
    assert "enabled" in text_of(row) and "sas" in text_of(row), text_of(row)
    # The audit relay's verdict on the SDK's ClientHello (Python's OpenSSL: TLS 1.2 offered).
    text_in(row, "sni=localhost ok")
    ok("devices: sensor-1 is enabled, sas, connected, last TLS verdict: sni=localhost ok")
    shot("devices")

    # Telemetry: a device message appears live with its properties; pause holds new ones.
    tab("telemetry")
    text_in("#telemetry-state", "live")
    m = Message(json.dumps({"temperature": 21.5}))
    m.custom_properties["unit"] = "celsius"
    device.client.send_message(m)
    text = text_in("#telemetry-list", "21.5")
    assert "sensor-1" in text and "unit=celsius" in text, text
    ok("telemetry: the device's message and its property appear on the page")
    for i in range(3):
        device.client.send_message(Message(json.dumps({"seq": i})))
    text_in("#telemetry-list", '"seq":2')
    wait.until(lambda d: d.find_element(By.ID, "telemetry-rate").text != "0.0 msg/s")
    ok("telemetry: rate shown: " + el("#telemetry-rate").text)
    fill("#telemetry-filter", "temperature")
    wait.until(lambda d: all("temperature" in li.text for li in
                             d.find_elements(By.CSS_SELECTOR, "#telemetry-list li") if li.is_displayed()))
    ok("telemetry: the filter hides messages without the text")
    shot("telemetry")
    fill("#telemetry-filter", "")
    el("#telemetry-pause").click()
    shown = len(driver.find_elements(By.CSS_SELECTOR, "#telemetry-list li"))
    device.client.send_message(Message("while paused"))
    text_in("#telemetry-state", "1 not shown")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#telemetry-list li")) == shown
    el("#telemetry-pause").click()
    ok("telemetry: pause holds new messages back and counts them")

    # Direct method: reaches the device, its status and payload are shown.
    fill_device("sensor-1")
    tab("method")
    fill("#method-name", "reboot")
    fill("#method-payload", '{"delay": 3}')
    fill("#method-timeout", "30")
    el("#method-invoke").click()
    ev = device.expect("method")
    assert ev[1] == "reboot" and ev[2] == {"delay": 3}, ev
    text_in("#method-status", "status 200")
    result = json.loads(text_in("#method-result", "echo"))
    assert result == {"echo": {"delay": 3}, "method": "reboot"}, result
    ok("method: reboot reached the SDK device and its answer is shown")
    shot("method")
    # Malformed JSON is refused on the page and never sent.
    fill("#method-payload", '{"delay": ')
    el("#method-invoke").click()
    text_in("#method-status", "not valid JSON")
    time.sleep(2)
    assert device.events.empty(), "a malformed payload reached the device"
    ok("method: malformed JSON refused on the page with the reason")
    shot("method-bad-json")
    # A method the device does not answer: the hub's 504.
    fill("#method-payload", "{}")
    fill("#method-name", "hang")
    fill("#method-timeout", "5")
    el("#method-invoke").click()
    text_in("#method-status", "504")
    ok("method: a timeout shows the hub's 504: " + el("#method-status").text)
    # An unknown device: the hub's 404.
    fill_device("no-such-device")
    fill("#method-name", "reboot")
    el("#method-invoke").click()
    text_in("#method-status", "404")
    assert "not in the registry" in el("#method-status").text
    ok("method: an unknown device shows the hub's 404: " + el("#method-status").text)
    # A registered device that is not connected: the hub's 404.
    fill_device("sensor-2")
    el("#method-invoke").click()
    text_in("#method-status", "not connected")
    ok("method: a disconnected device shows the hub's 404: " + el("#method-status").text)

    # Twin: the desired patch edited on the page reaches the device.
    fill_device("sensor-1")
    tab("twin")
    el("#twin-load").click()
    text_in("#twin-desired-version", "$version")
    fill("#twin-patch", "{not json")
    el("#twin-send").click()
    text_in("#twin-status", "not valid JSON")
    ok("twin: malformed JSON refused on the page with the reason")
    fill("#twin-patch", '{"telemetryInterval": 7}')
    el("#twin-send").click()
    ev = device.expect("desired")
    assert ev[1]["telemetryInterval"] == 7, ev
    text_in("#twin-desired", '"telemetryInterval": 7')
    text_in("#twin-status", "desired patch sent")
    ok("twin: the desired patch reached the device ($version %s), the page shows it"
       % ev[1].get("$version"))
    device.client.patch_twin_reported_properties({"firmware": "1.2.3"})
    time.sleep(1)
    el("#twin-load").click()
    text_in("#twin-reported", "1.2.3")
    ok("twin: the reported properties are shown with " + el("#twin-reported-version").text)
    shot("twin")
    fill_device("no-such-device")
    el("#twin-load").click()
    text_in("#twin-status", "404")
    ok("twin: an unknown device shows the hub's 404")

    # Cloud-to-device: body and properties reach the device.
    fill_device("sensor-1")
    tab("c2d")
    fill("#c2d-body", "hello device")
    fill("#c2d-props", "kind=greeting")
    el("#c2d-send").click()
    ev = device.expect("c2d")
    assert ev[1] == "hello device" and ev[2].get("kind") == "greeting", ev
    text_in("#c2d-status", "pending")
    ok("c2d: the message and its property reached the device: " + el("#c2d-status").text)
    # A disconnected device's messages wait: the pending count shows it.
    fill_device("sensor-2")
    el("#c2d-send").click()
    text_in("#c2d-status", "for sensor-2 (1 pending)")
    ok("c2d: for a disconnected device the pending count is shown")
    shot("c2d")
    tab("devices")
    text_in("#device-row-sensor-2 td:last-child", "1")

    # Registry: add a device (keys generated), its connection string only when asked, and
    # a device added on the page connects with it.
    tab("registry")
    fill("#registry-new-id", "web-added")
    el("#registry-add").click()
    text_in("#registry-status", "added web-added")
    text_in("#registry-table", "web-added")
    assert "SharedAccessKey" not in el("#view-registry").text
    shot("registry")
    click("#registry-row-web-added .show-secret")
    conn = text_in("#registry-connection-string", "SharedAccessKey=")
    shot("registry-secret")
    added = Device(conn)
    added.client.send_message(Message("from the new device"))
    tab("telemetry")
    text_in("#telemetry-list", "from the new device")
    added.client.shutdown()
    ok("registry: a device added on the page connects with the shown connection string")
    tab("registry")
    el("#registry-secret-hide").click()
    assert el("#registry-connection-string").text == ""
    # Rotate: the old connection string stops working.
    click("#registry-row-web-added .rotate-primary")
    text_in("#registry-status", "new primary key")
    refused_with(conn, "after rotating, the old key is refused")

    # Disable: the device shows as disabled, is disconnected and cannot connect again.
    click("#registry-row-sensor-1 .toggle")
    text_in("#registry-row-sensor-1", "disabled")
    tab("devices")
    text_in("#device-row-sensor-1", "disabled")
    wait.until(lambda d: "disconnected" in d.find_element(By.CSS_SELECTOR, "#device-row-sensor-1").text)
    shot("devices-disabled")
    try:
        device.client.shutdown()
    except Exception:
        pass
    refused_with(f"HostName={host};DeviceId=sensor-1;SharedAccessKey={key1}",
                 "disabled sensor-1 shows disabled, was disconnected, and is refused")
    print("browser: all checks passed", flush=True)
finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
