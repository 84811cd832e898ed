# Runs the shared protocol vectors through sensornode.protocol. Written in the MicroPython
# subset: the hil_tests run it under the micropython interpreter, tests/ import it under CPython.
import json

from sensornode import protocol

DECODERS = {
    "telemetry": protocol.decode_telemetry,
    "status": protocol.decode_status,
    "event": protocol.decode_event,
    "cmd": protocol.decode_command,
    "ack": protocol.decode_ack,
    "time": protocol.decode_time,
    "estop": protocol.decode_estop,
}


def check_payload(vector):
    """Return None when the vector holds, else a description of the mismatch."""
    decoder = DECODERS[vector["kind"]]
    try:
        decoded = decoder(vector["payload"])
    except protocol.ProtocolError as exc:
        if vector["ok"]:
            return "refused a valid payload: %s" % exc
        if vector["error"] not in str(exc):
            return "error %r does not mention %r" % (str(exc), vector["error"])
        return None
    if not vector["ok"]:
        return "accepted an invalid payload: %r" % (decoded,)
    if decoded != vector["decoded"]:
        return "decoded %r, expected %r" % (decoded, vector["decoded"])
    return None


def check_topic(vector):
    try:
        parts = protocol.parse_topic(vector["topic"])
    except protocol.ProtocolError as exc:
        if vector["ok"]:
            return "refused a valid topic: %s" % exc
        return (
            None
            if vector["error"] in str(exc)
            else "error %r lacks %r" % (str(exc), vector["error"])
        )
    if not vector["ok"]:
        return "accepted an invalid topic"
    return None if list(parts) == vector["parts"] else "parsed %r" % (parts,)


def run(path):
    with open(path) as f:
        vectors = json.loads(f.read())
    failures = []
    for vector in vectors["payloads"]:
        problem = check_payload(vector)
        if problem:
            failures.append("%s: %s" % (vector["name"], problem))
    for vector in vectors["topics"]:
        problem = check_topic(vector)
        if problem:
            failures.append("%s: %s" % (vector["topic"], problem))
    return len(vectors["payloads"]) + len(vectors["topics"]), failures


if __name__ == "__main__":
    import sys

    count, failures = run(sys.argv[1])
    for failure in failures:
        print("FAIL", failure)
    print("VECTORS", count, "FAILED", len(failures))
