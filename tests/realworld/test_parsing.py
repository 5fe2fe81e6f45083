"""Parsers: expat (callbacks into Python), json-c, libxml2 (which pulls in ICU, a C++
library with TLS bound to libstdc++'s thread-locals) — results checked against Python's
own parsers."""

from __future__ import annotations

import ctypes
import json
import xml.parsers.expat
from ctypes import CFUNCTYPE, POINTER, byref, c_char, c_char_p, c_double, c_int, c_void_p

from realhelp import fn, load_system

XML = (b'<?xml version="1.0"?><catalog lang="en"><item id="1">Tea</item>'
       b'<item id="2">Caf\xc3\xa9</item><!-- note --><empty/><item id="3">Milk &amp; '
       b'honey</item></catalog>')


def python_events(doc: bytes) -> list[tuple[str, ...]]:
    events: list[tuple[str, ...]] = []
    p = xml.parsers.expat.ParserCreate()
    p.StartElementHandler = lambda n, a: events.append(("start", n, *sorted(a.items())[0])
                                                       if a else ("start", n))
    p.EndElementHandler = lambda n: events.append(("end", n))
    p.CharacterDataHandler = lambda t: events.append(("text", t))
    p.Parse(doc, True)
    return events


def test_expat(how: str) -> None:
    with load_system("libexpat.so.1", how) as x:
        create = fn(x, "XML_ParserCreate", c_void_p, c_char_p)
        free = fn(x, "XML_ParserFree", None, c_void_p)
        start_t = CFUNCTYPE(None, c_void_p, c_char_p, POINTER(c_char_p))
        end_t = CFUNCTYPE(None, c_void_p, c_char_p)
        text_t = CFUNCTYPE(None, c_void_p, POINTER(c_char), c_int)
        set_elem = fn(x, "XML_SetElementHandler", None, c_void_p, start_t, end_t)
        set_text = fn(x, "XML_SetCharacterDataHandler", None, c_void_p, text_t)
        parse = fn(x, "XML_Parse", c_int, c_void_p, c_char_p, c_int, c_int)
        code = fn(x, "XML_GetErrorCode", c_int, c_void_p)
        message = fn(x, "XML_ErrorString", c_char_p, c_int)
        line = fn(x, "XML_GetCurrentLineNumber", ctypes.c_ulong, c_void_p)

        events: list[tuple[str, ...]] = []

        def on_start(_u: int, name: bytes, attrs: object) -> None:
            a = []
            i = 0
            while attrs[i]:  # type: ignore[index]
                a.append((attrs[i].decode(), attrs[i + 1].decode()))  # type: ignore[index]
                i += 2
            events.append(("start", name.decode(), *sorted(a)[0]) if a
                          else ("start", name.decode()))

        def on_text(_u: int, s: object, n: int) -> None:
            events.append(("text", ctypes.string_at(s, n).decode()))

        cbs = (start_t(on_start), end_t(lambda _u, n: events.append(("end", n.decode()))),
               text_t(on_text))
        p = create(None)
        set_elem(p, cbs[0], cbs[1])
        set_text(p, cbs[2])
        assert parse(p, XML, len(XML), 1) == 1
        free(p)
        assert events == python_events(XML)
        assert ("text", "Café") in events

        p = create(None)
        bad = b"<a>\n<b></a>"
        assert parse(p, bad, len(bad), 1) == 0
        assert message(code(p)) == b"mismatched tag"
        assert line(p) == 2
        free(p)


DOC = {"name": "relink", "tags": ["elf", "loader"], "n": 42, "ok": True,
       "nested": {"pi": 3.25, "none": None}}


def test_json_c(how: str) -> None:
    with load_system("libjson-c.so.5", how) as j:
        parse = fn(j, "json_tokener_parse", c_void_p, c_char_p)
        get_ex = fn(j, "json_object_object_get_ex", c_int, c_void_p, c_char_p,
                    POINTER(c_void_p))
        get_int = fn(j, "json_object_get_int", c_int, c_void_p)
        get_str = fn(j, "json_object_get_string", c_char_p, c_void_p)
        get_double = fn(j, "json_object_get_double", c_double, c_void_p)
        arr_len = fn(j, "json_object_array_length", ctypes.c_size_t, c_void_p)
        arr_get = fn(j, "json_object_array_get_idx", c_void_p, c_void_p, ctypes.c_size_t)
        to_string = fn(j, "json_object_to_json_string_ext", c_char_p, c_void_p, c_int)
        put = fn(j, "json_object_put", c_int, c_void_p)

        obj = parse(json.dumps(DOC).encode())
        assert obj
        out = c_void_p()
        assert get_ex(obj, b"n", byref(out)) and get_int(out) == 42
        assert get_ex(obj, b"name", byref(out)) and get_str(out) == b"relink"
        assert get_ex(obj, b"tags", byref(out)) and arr_len(out) == 2
        assert get_str(arr_get(out, 1)) == b"loader"
        assert get_ex(obj, b"nested", byref(out))
        inner = out.value
        assert get_ex(inner, b"pi", byref(out)) and get_double(out) == 3.25
        assert not get_ex(obj, b"missing", byref(out))
        assert json.loads(to_string(obj, 0)) == DOC  # JSON_C_TO_STRING_PLAIN round trip
        assert put(obj) == 1
        assert parse(b"{not json") is None


def test_libxml2_with_icu(how: str) -> None:
    with load_system("libxml2.so.2", how) as x:
        deps = {d.name: d.is_host for d in x.dependencies}
        icu = [n for n in deps if n.startswith("libicuuc.so.")]
        assert icu and deps[icu[0]] is False  # ICU (C++, TLS) is loaded by relink too
        fn(x, "xmlInitParser", None)()
        read = fn(x, "xmlReadMemory", c_void_p, c_char_p, c_int, c_char_p, c_char_p, c_int)
        free_doc = fn(x, "xmlFreeDoc", None, c_void_p)
        new_ctx = fn(x, "xmlXPathNewContext", c_void_p, c_void_p)
        free_ctx = fn(x, "xmlXPathFreeContext", None, c_void_p)
        evaluate = fn(x, "xmlXPathEvalExpression", c_void_p, c_char_p, c_void_p)
        free_obj = fn(x, "xmlXPathFreeObject", None, c_void_p)
        as_number = fn(x, "xmlXPathCastToNumber", c_double, c_void_p)
        as_string = fn(x, "xmlXPathCastToString", c_void_p, c_void_p)

        # xmlFree is a global *variable* holding the deallocator
        xml_free = CFUNCTYPE(None, c_void_p)(c_void_p.from_address(x["xmlFree"]).value)
        doc = read(XML, len(XML), b"catalog.xml", None, 0)
        assert doc
        ctx = new_ctx(doc)

        def xpath(expr: bytes) -> tuple[float, str]:
            obj = evaluate(expr, ctx)
            assert obj, expr
            num = as_number(obj)
            s = as_string(obj)
            text = ctypes.string_at(s).decode()
            xml_free(s)
            free_obj(obj)
            return num, text

        assert xpath(b"count(//item)")[0] == 3.0
        assert xpath(b"string(//item[@id='2'])")[1] == "Café"
        assert xpath(b"sum(//item/@id)")[0] == 6.0
        assert xpath(b"string(/catalog/@lang)")[1] == "en"
        assert xpath(b"normalize-space(//item[3])")[1] == "Milk & honey"
        free_ctx(ctx)
        free_doc(doc)
        bad = b"<a><b></a>"
        assert not read(bad, len(bad), None, None, 0x20 | 0x40)  # NOERROR | NOWARNING
