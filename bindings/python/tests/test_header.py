"""The ctypes declarations stay in step with include/tether.h: every prototype the binding
declares exists in the header with the same arity and matching types, and every structure
the binding mirrors has the header's fields, in order, with matching types."""

import ctypes
import re
from ctypes import POINTER
from pathlib import Path

import pytest

from tether import _native as n

HEADER = Path(__file__).resolve().parents[3] / "include" / "tether.h"

OPAQUE = {"tether_client", "tether_tls_config", "tether_tls_config_builder", "tether_connection_string",
          "tether_session", "tether_credential_store"}
STRUCTS = {cls._c_name_: cls for cls in n.STRUCTS}
SCALARS = {
    "void": None,
    "bool": ctypes.c_bool,
    "int": ctypes.c_int,
    "uint8_t": ctypes.c_uint8,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
}


def header_text() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def split_decl(decl: str):
    """`const struct tether_client *client` -> ('struct tether_client *', 'client')."""
    decl = re.sub(r"\bconst\b", " ", decl)
    decl = re.sub(r"\s*\*\s*", " * ", decl)
    parts = decl.split()
    name = parts[-1]
    return " ".join(parts[:-1]).replace(" *", "*").replace("* ", "*"), name


def allowed(ctype: str):
    """The ctypes types that correctly represent the C type `ctype` (normalised)."""
    base = ctype.rstrip("*")
    stars = len(ctype) - len(base)
    base = base.strip()
    if base.startswith("enum "):
        assert stars == 0
        return {n.c_enum}
    if base == "tether_log_callback":
        return {n.LogCallback}
    if base.startswith("struct "):
        name = base.split()[1]
        if name in OPAQUE:
            return {ctypes.c_void_p} if stars == 1 else {POINTER(ctypes.c_void_p)}
        cls = STRUCTS[name]
        return {cls} if stars == 0 else {POINTER(cls)}
    if stars == 0:
        return {SCALARS[base]}
    if base in ("char", "uint8_t") and stars == 1:
        return {ctypes.c_char_p, ctypes.c_void_p}
    if base == "char" and stars == 2:
        return {POINTER(ctypes.c_char_p)}
    if stars == 1:
        return {POINTER(SCALARS[base])}
    raise AssertionError(f"no mapping for {ctype}")


def prototypes():
    found = {}
    for m in re.finditer(r"([A-Za-z_][\w \t\*]*?)\b(tether_\w+)\s*\(([^()]*)\)\s*;", header_text()):
        ret, name, params = m.group(1).strip(), m.group(2), m.group(3).strip()
        if ret.startswith("typedef"):
            continue
        ret_type, _ = split_decl(ret + " x")
        args = [] if params in ("", "void") else [split_decl(p)[0] for p in params.split(",")]
        found[name] = (ret_type, args)
    return found


def structs():
    found = {}
    for m in re.finditer(r"typedef struct (tether_\w+) \{(.*?)\} \1;", header_text(), flags=re.S):
        fields = [split_decl(f) for f in m.group(2).split(";") if f.strip()]
        found[m.group(1)] = [(name, t) for t, name in fields]
    return found


def test_header_is_parsed():
    protos = prototypes()
    assert len(protos) >= 100, sorted(protos)
    assert protos["tether_client_poll"] == ("enum tether_result", ["struct tether_client*", "uint32_t", "struct tether_event*"])


@pytest.mark.parametrize("name", sorted(n.PROTOTYPES))
def test_prototype_matches_header(name):
    protos = prototypes()
    assert name in protos, f"{name} is declared in Python but not in tether.h"
    c_ret, c_args = protos[name]
    restype, argtypes = n.PROTOTYPES[name]
    assert restype in allowed(c_ret), f"{name}: returns {c_ret}, Python says {restype}"
    assert len(argtypes) == len(c_args), f"{name}: {len(c_args)} parameters in C, {len(argtypes)} in Python"
    for i, (py, c) in enumerate(zip(argtypes, c_args)):
        assert py in allowed(c), f"{name} parameter {i}: C {c}, Python {py}"


@pytest.mark.parametrize("cls", n.STRUCTS, ids=lambda c: c._c_name_)
def test_struct_matches_header(cls):
    fields = structs()[cls._c_name_]
    assert [f[0] for f in cls._fields_] == [f[0] for f in fields]
    for (name, py), (_, c) in zip(cls._fields_, fields):
        assert py in allowed(c), f"{cls._c_name_}.{name}: C {c}, Python {py}"


def test_drift_is_detected():
    # The check itself must be able to fail: a wrong arity and a wrong type are caught.
    c_ret, c_args = prototypes()["tether_sas_token"]
    assert len(c_args) == 7
    assert ctypes.c_uint32 not in allowed(c_args[3])  # uint64_t expiry
    assert ctypes.c_void_p not in allowed("struct tether_event*")


def header_constants():
    """Every integer constant of tether.h: `#define TETHER_X 1` and enumerators `TETHER_X = 1`."""
    text = header_text()
    found = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define TETHER_(\w+) (\d+)\b", text)}
    found.update({m.group(1): int(m.group(2)) for m in re.finditer(r"\bTETHER_(\w+) = (\d+)", text)})
    return found


BINDING_ONLY = {"INITIAL_BUFFER"}  # the binding's first buffer size, not a C constant


def test_constants_match_header():
    # Result codes are mirrored without their RESULT_ prefix (n.OK, n.TIMEOUT); everything
    # else (EVENT_*, SUBSCRIBE_*, LOG_*, ...) by its C name without TETHER_.
    consts = header_constants()
    mirrored = {k: v for k, v in vars(n).items() if k.isupper() and isinstance(v, int) and k not in BINDING_ONLY}
    assert len(mirrored) >= 25, sorted(mirrored)
    for name, value in mirrored.items():
        c_name = name if name in consts else "RESULT_" + name
        assert c_name in consts, f"_native.{name} has no TETHER_{c_name} in tether.h"
        assert consts[c_name] == value, f"_native.{name} = {value}, TETHER_{c_name} = {consts[c_name]}"
    assert consts["RESULT_BUFFER_TOO_SMALL"] == 4 and consts["EVENT_DISCONNECTED"] == 8
