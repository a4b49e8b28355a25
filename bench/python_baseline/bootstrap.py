"""COMPARISON BASELINE: a tiny Lambda runtime loop (urllib only) around handler.handler, so
the Python baseline runs under the same Runtime API stub as the Rust functions."""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handler

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"

while True:
    with urllib.request.urlopen(api + "next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    try:
        body, path = json.dumps(handler.handler(event, None)).encode(), "/response"
    except Exception as e:  # report it as Lambda would
        body, path = json.dumps({"errorMessage": str(e), "errorType": type(e).__name__}).encode(), "/error"
    req = urllib.request.Request(api + request_id + path, data=body, method="POST")
    urllib.request.urlopen(req).read()
