//! The plain-data codec the trusted harness decodes candidate replies with: exact round trips of
//! every plain type, and every malformed or hostile frame rejected with `CodecError` (never a
//! crash, never an object of a non-builtin type). Runs the codec in a plain `python3`.

use std::process::Command;

const CODEC: &str = include_str!("../src/sandbox/codec.py");

const CHECKS: &str = r#"
import math, struct

def rejects(data, **kw):
    try:
        decode(data, **kw)
    except CodecError:
        return
    raise SystemExit('accepted: %r' % (data[:60],))

def cannot_encode(value):
    try:
        encode(value)
    except CodecError:
        return
    raise SystemExit('encoded: %r' % (type(value),))

values = [None, True, False, 0, -1, 255, -256, 2 ** 1000, -(2 ** 999), 1.5, -0.0, float('inf'),
          1j, '', 'snow \u2603 \ud800', b'', b'\x00\xff', [], (), {}, set(), frozenset(),
          [1, [2, (3, {'k': {4, 5}})]], {(1, 2): frozenset({'a'}), None: [], 1.5: {}},
          int, str, list, type]
for value in values:
    back = decode(encode(value))
    assert back == value and type(back) is type(value), (value, back)
assert math.isnan(decode(encode(float('nan'))))
assert str(decode(encode(-0.0))) == '-0.0'

# Values that are not plain data.
class E:
    __eq__ = lambda self, other: True
class I(int):
    pass
class S(str):
    pass
class L(list):
    pass
class D(dict):
    pass
for value in [E(), I(3), S('x'), L(), D(), [1, E()], {'k': E()}, (x for x in []), iter([]),
              range(3), len, lambda: 0, bytearray(b'x'), memoryview(b'x'), object()]:
    cannot_encode(value)
nested = []
for _ in range(MAX_DEPTH + 2):
    nested = [nested]
cannot_encode(nested)
cycle = []
cycle.append(cycle)
cannot_encode(cycle)
cannot_encode([0] * (MAX_ITEMS + 1))
cannot_encode('x' * (MAX_FRAME + 1))
cannot_encode(1 << (8 * MAX_FRAME + 8))

# Malformed and hostile frames.
u32 = lambda n: struct.pack('>I', n)
for data in [b'', b'?', b'i', b'i' + u32(0), b'i' + u32(5) + b'\x01', b'f\x00', b's' + u32(10) + b'abc',
             b's' + u32(2) + b'\xff\xfe', b'NN', b'l' + u32(2) + b'N', b'l' + u32(0xFFFFFFFF),
             b'd' + u32(1) + b'l' + u32(0) + b'N', b'd' + u32(2) + b'NNNN',
             b'e' + u32(2) + b'TT', b'e' + u32(1) + b'l' + u32(0), b'y\x04eval', b'y\x09__import__',
             b'y\xff', b'r' + b'\x00' * 8, b'l' + u32(1) * 0, 'str is not bytes',
             b'l' + u32(1) + b'l' + u32(1) + b'N' + b'x']:
    rejects(data if isinstance(data, str) else data)
rejects(b'l' + u32(1) * 0 + b'\x00')
deep = b''.join(b'l' + u32(1) for _ in range(MAX_DEPTH + 5)) + b'N'
rejects(deep)
deep = b''.join(b'l' + u32(1) for _ in range(100000)) + b'N'
rejects(deep)
many = b'l' + u32(MAX_ITEMS + 5) + b'N' * (MAX_ITEMS + 5)
rejects(many)
# Remote handles only where the caller allows them.
assert decode(b'r' + b'\x00' * 7 + b'\x05', make_remote=lambda handle: ('remote', handle)) == ('remote', 5)
print('ok')
"#;

#[test]
fn codec_round_trips_and_rejects_hostile_frames() {
    let output = Command::new("python3")
        .args(["-s", "-S", "-c"])
        .arg(format!("{CODEC}\n{CHECKS}"))
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
