# Command authentication on the node: every command must be signed by the gateway with this
# node's key and carry a counter above the last one accepted, so nobody on the broker can forge
# a command or replay a recorded one (docs/protocol.md, "cmd"). MicroPython subset: there is no
# `hmac` module on the ports, so HMAC-SHA256 (RFC 2104) is built here on hashlib.sha256.
#
# The last accepted counter is kept on flash (tmp + rename, one small write per accepted
# command: commands are rare), so a reboot cannot reopen the replay window.
import binascii
import hashlib
import json
import os

from sensornode import protocol

KEY_BYTES = 32
_BLOCK = 64  # SHA-256 block size, which RFC 2104 pads the key to

# Why a command was refused: the first word of the ack's detail and of the event's detail.
FORGED = "forged"
REPLAYED = "replayed"
WRONG_NODE = "wrong node"
NO_KEY = "no key configured"


def hmac_sha256(key, message):
    """RFC 2104 HMAC with SHA-256: bytes of 32."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    inner_pad = bytearray(_BLOCK)
    outer_pad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        byte = key[i] if i < len(key) else 0
        inner_pad[i] = byte ^ 0x36
        outer_pad[i] = byte ^ 0x5C
    inner = hashlib.sha256(bytes(inner_pad))
    inner.update(message)
    outer = hashlib.sha256(bytes(outer_pad))
    outer.update(inner.digest())
    return outer.digest()


def sign(key, message):
    """The hex signature the protocol carries in a command's `sig`."""
    return binascii.hexlify(hmac_sha256(key, message)).decode()


def same_text(a, b):
    """Compare without stopping at the first difference: the time taken says nothing about
    how much of a guessed signature was right."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= ord(a[i]) ^ ord(b[i])
    return diff == 0


def parse_key(text):
    """The key bytes from the config's hex text; ValueError naming the fix when malformed."""
    if not isinstance(text, str) or len(text) != 2 * KEY_BYTES:
        raise ValueError("must be %d hex digits (a %d-byte key)" % (2 * KEY_BYTES, KEY_BYTES))
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise ValueError("must be hex digits only (0-9, a-f)") from None


class CommandAuth:
    def __init__(self, node, key_hex, path):
        """node: this node's name; key_hex: the config's cmd_key ("" when none is set);
        path: the file that keeps the last accepted counter."""
        self.node = node
        self._key = parse_key(key_hex) if key_hex else None
        self._path = path
        self.last = _load(path)  # None: the file is damaged

    def admit(self, cmd, payload):
        """None when the decoded command `cmd` (raw `payload`) may be carried out, its counter
        then saved as the last accepted; else why not, e.g. "replayed: counter 3, ...".

        Checked in this order: a key to check against, the node it names, the signature over
        the exact bytes sent, and only then the counter (an unsigned counter proves nothing)."""
        if self._key is None:
            return NO_KEY + ": set cmd_key in this node's config (the gateway's key for it)"
        if cmd["node"] != self.node:
            if not cmd["node"]:
                return WRONG_NODE + ": the command names no node"
            return WRONG_NODE + ": it is for %s, this is %s" % (cmd["node"], self.node)
        signed, sig = protocol.split_signature(payload)
        if not sig:
            return FORGED + ": no signature"
        if not same_text(sign(self._key, signed), sig):
            return FORGED + ": the signature does not match this node's key"
        if self.last is None:
            # Written with tmp + rename, so only flash corruption gets here. Counting from 0
            # again would reopen every command ever sent: refuse until someone decides.
            return "error: %s is damaged; remove it to accept commands again" % self._path
        counter = cmd["counter"]
        if counter <= self.last:
            if counter == 0:
                return REPLAYED + ": the command has no counter"
            return REPLAYED + ": counter %d, last accepted %d" % (counter, self.last)
        try:
            _save(self._path, counter)
        except OSError as exc:
            # Accepting without saving would let a reboot take the same command again.
            return "error: cannot save the command counter (%s)" % exc
        self.last = counter
        return None


def _load(path):
    try:
        with open(path) as f:
            value = json.loads(f.read())["last"]
    except OSError:
        return 0  # no command accepted yet
    except (ValueError, KeyError, TypeError):
        value = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    print("[cmdauth] %s is damaged; commands are refused until it is removed" % path)
    return None


def _save(path, counter):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"last": counter}))
    os.rename(tmp, path)  # atomic on LittleFS and POSIX: a power cut leaves old or new
