import json
import logging

from service import logs


def test_json_lines_carry_the_request_id_and_extras():
    formatter = logs.JsonFormatter()
    record = logging.makeLogRecord({"name": "margipose.access", "levelno": logging.INFO,
                                    "levelname": "INFO", "msg": "POST %s %d",
                                    "args": ("/v1/predict", 200), "status": 200})
    token = logs.request_id.set("abc123")
    try:
        entry = json.loads(formatter.format(record))
    finally:
        logs.request_id.reset(token)
    assert entry["message"] == "POST /v1/predict 200"
    assert entry["request_id"] == "abc123" and entry["status"] == 200
    assert entry["level"] == "info" and entry["logger"] == "margipose.access"
    assert entry["time"].endswith("Z")
    assert json.loads(formatter.format(record))["request_id"] == "-"


def test_access_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="margipose.access")
    r = client.get("/v1/model", headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    lines = [rec for rec in caplog.records if rec.name == "margipose.access"
             and getattr(rec, "path", None) == "/v1/model"]
    assert lines and lines[-1].status == 200 and lines[-1].duration_ms > 0
