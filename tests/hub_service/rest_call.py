"""One HTTPS call to the stand-in's service API with Python's own HTTP client.

argv: method url ca authorization [body]
stdout: {"status": HTTP status, "body": parsed JSON body}
"""
import json
import ssl
import sys
import urllib.error
import urllib.request

method, url, ca, auth = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request(url, data=body, method=method)
if auth:
    req.add_header("Authorization", auth)
req.add_header("Content-Type", "application/json")
ctx = ssl.create_default_context(cafile=ca)
try:
    with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
        status, text = r.status, r.read()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read()
print(json.dumps({"status": status, "body": json.loads(text) if text else None}))
