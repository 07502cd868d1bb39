//! The malformed-line battery: lines an attacker or a broken client might send, each with the one
//! answer JSON-RPC 2.0 asks for.

use super::*;

/// What one line sent to the server must get back.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// One error with this code and id (`Value::Null`: the id could not be read).
    Error(i64, Value),
    /// One result for this id.
    Result(Value),
    /// No answer at all (a notification, a client's response, a blank line).
    Nothing,
}

/// One line of the battery: its bytes, its answer, and whether it is malformed.
pub(super) struct Case {
    pub(super) line: Vec<u8>,
    pub(super) expect: Expect,
    pub(super) malformed: bool,
}

/// Lines an attacker (or a broken client) might send, each with the one answer JSON-RPC 2.0 asks for.
/// Ids are unique, so every answer can be matched to its line.
pub(super) fn battery() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 100_000i64;
    // a fresh id, alternating numbers and strings
    let mut next_id = move || {
        n += 1;
        if n % 2 == 0 {
            json!(n)
        } else {
            json!(format!("c{n}"))
        }
    };
    let bad = |cases: &mut Vec<Case>, line: Vec<u8>, expect: Expect| {
        cases.push(Case {
            line,
            expect,
            malformed: true,
        })
    };
    let req = |id: &Value, method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
            .into_bytes()
    };
    let call_with = |id: &Value, args: &[u8]| {
        let mut l = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"state","arguments":"#
        )
        .into_bytes();
        l.extend_from_slice(args);
        l.extend_from_slice(b"}}");
        l
    };
    let parse = |id: &Value| Expect::Error(-32700, id.clone());
    let null = |code| Expect::Error(code, Value::Null);

    // not JSON at all
    for g in [
        "{this is not json",
        "hello",
        "}",
        r#"{"a":}"#,
        "nul",
        "tru",
        "[1,2",
        r#"{"jsonrpc""#,
        "'single'",
        "{'id':1}",
        r#""unterminated"#,
        "{,}",
        "::",
        "\u{1}",
        r#"{"id"}"#,
        r#"{"id" 1}"#,
        r#"{"id":}"#,
        "{{}}",
    ] {
        bad(&mut cases, g.into(), null(-32700));
    }
    // truncated requests: cut after the id, the id is known; cut inside it, it is not
    for cut in (0..24).map(|i| 0.3 + f64::from(i) * 0.028) {
        let id = next_id();
        let full = format!(
            r#"{{"id":{id},"jsonrpc":"2.0","method":"tools/call","params":{{"name":"state","arguments":{{"action":"get","key":"k"}}}}}}"#
        );
        let at = (full.len() as f64 * cut) as usize;
        let head = format!(r#"{{"id":{id},"#);
        assert!(at >= head.len() && at < full.len());
        bad(&mut cases, full.as_bytes()[..at].to_vec(), parse(&id));
    }
    for t in [
        r#"{"id":42"#,
        r#"{"id":"ab"#,
        r#"{"id"#,
        "{",
        r#"{"jsonrpc":"2.0","method":"ping","id":"#,
        r#"{"jsonrpc":"2.0","method":"ping","id":-"#,
    ] {
        bad(&mut cases, t.into(), null(-32700));
    }
    // lone surrogates, in values, keys, the method and the tool name
    for sur in [
        r"\ud800",
        r"\udc00",
        r"\udfff",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"x\udbff",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"get","key":"{sur}"}}"#).as_bytes(),
            ),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            call_with(&id, format!(r#"{{"{sur}":1}}"#).as_bytes()),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            req(&id, &format!("ping{sur}"), "{}"),
            parse(&id),
        );
    }
    let id = next_id();
    bad(
        &mut cases,
        req(&id, "tools/call", r#"{"name":"st\udc00ate"}"#),
        parse(&id),
    );
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#.into(),
        null(-32700),
    );
    // numbers beyond f64
    for num in [
        "1e400",
        "-1e400",
        "1e309",
        "2e308",
        "123e99999",
        "0.1e99999999999999999999",
        "-9e999999",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{num}}}"#).as_bytes(),
            ),
            parse(&id),
        );
        let id = next_id();
        bad(
            &mut cases,
            req(&id, "ping", &format!(r#"{{"n":[{num}]}}"#)),
            parse(&id),
        );
    }
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#.into(),
        null(-32700),
    );
    bad(
        &mut cases,
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#.into(),
        null(-32600),
    );
    // invalid UTF-8 inside strings, in the tool name, and between tokens
    for bytes in [
        &b"\xff"[..],
        b"\xfe",
        b"\xc3\x28",
        b"\xa0\xa1",
        b"\xe2\x28\xa1",
        b"\xf0\x28\x8c\xbc",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
    ] {
        let id = next_id();
        let mut args = br#"{"action":"get","key":"a"#.to_vec();
        args.extend_from_slice(bytes);
        args.extend_from_slice(br#"b"}"#);
        bad(&mut cases, call_with(&id, &args), parse(&id));
    }
    for bytes in [&b"\xff\xfe"[..], b"\xc3"] {
        let id = next_id();
        let mut l =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"st"#)
                .into_bytes();
        l.extend_from_slice(bytes);
        l.extend_from_slice(br#"ate"}}"#);
        bad(&mut cases, l, parse(&id));
        let id = next_id();
        let mut l = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping","#).into_bytes();
        l.extend_from_slice(bytes);
        l.extend_from_slice(br#""params":{}}"#);
        bad(&mut cases, l, parse(&id));
    }
    // nesting deeper than 128 levels: arrays, objects, both, unclosed, with the id before or after
    for depth in [129, 130, 200, 1_000, 100_000, 1_000_000] {
        let id = next_id();
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        bad(
            &mut cases,
            req(&id, "ping", &format!(r#"{{"d":{deep}}}"#)),
            parse(&id),
        );
    }
    for depth in [129, 1_000, 50_000] {
        let id = next_id();
        let deep = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","method":"ping","params":{deep},"id":{id}}}"#)
                .into_bytes(),
            parse(&id),
        );
    }
    let id = next_id();
    bad(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"m":{}}}"#, r#"[{"a":"#.repeat(500)),
        ),
        parse(&id),
    );
    let id = next_id();
    bad(
        &mut cases,
        call_with(&id, "[".repeat(10_000).as_bytes()),
        parse(&id),
    );
    // byte order marks: one at the start is allowed; elsewhere it is an error
    let id = next_id();
    cases.push(Case {
        line: [b"\xEF\xBB\xBF".as_slice(), &req(&id, "ping", "{}")].concat(),
        expect: Expect::Result(id),
        malformed: false,
    });
    bad(&mut cases, b"\xEF\xBB\xBFgarbage".to_vec(), null(-32700));
    let id = next_id();
    bad(
        &mut cases,
        [
            b"\xEF\xBB\xBF\xEF\xBB\xBF".as_slice(),
            &req(&id, "ping", "{}"),
        ]
        .concat(),
        null(-32700),
    );
    let id = next_id();
    bad(
        &mut cases,
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\u{feff}\"method\":\"ping\"}}").into_bytes(),
        parse(&id),
    );
    // NUL bytes
    let id = next_id();
    bad(
        &mut cases,
        call_with(&id, b"{\"action\":\"get\",\"key\":\"a\x00b\"}"),
        parse(&id),
    );
    let id = next_id();
    bad(
        &mut cases,
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\0\"method\":\"ping\"}}").into_bytes(),
        parse(&id),
    );
    bad(&mut cases, b"\x00".to_vec(), null(-32700));
    bad(&mut cases, b"\x00\x00\x00".to_vec(), null(-32700));
    bad(
        &mut cases,
        b"\x00{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"ping\"}".to_vec(),
        null(-32700),
    );
    // ids of the wrong type, or numbers that are not integers an id can be
    for id in [
        "{}",
        "[]",
        "[1]",
        "true",
        "false",
        "null",
        "1.5",
        "-0.5",
        r#"{"a":1}"#,
        "9223372036854775808",
        "-9223372036854775809",
        "9007199254740993.0",
    ] {
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).into_bytes(),
            null(-32600),
        );
    }
    // batches (not in MCP any more): one error for the whole array
    for b in [
        "[]",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        "[1]",
        "[[]]",
        "[{}]",
        "[null]",
        "  [ ]  ",
        r#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"state","arguments":{"action":"set","key":"batch","value":1}}}]"#,
    ] {
        bad(&mut cases, b.into(), null(-32600));
    }
    bad(
        &mut cases,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},"#.into(),
        null(-32700),
    );
    bad(&mut cases, r#"[{"id":5"#.into(), null(-32700));
    // JSON that is not an object
    for v in [
        "1",
        r#""x""#,
        "null",
        "true",
        "false",
        "-0",
        "1e5",
        r#""{\"id\":1}""#,
    ] {
        bad(&mut cases, v.into(), null(-32600));
    }
    // the envelope: jsonrpc, method, result/error, params
    for jsonrpc in [
        None,
        Some(r#""1.0""#),
        Some("2.0"),
        Some(r#""2.0 ""#),
        Some("null"),
        Some(r#"["2.0"]"#),
    ] {
        let id = next_id();
        let line = match jsonrpc {
            Some(v) => format!(r#"{{"jsonrpc":{v},"id":{id},"method":"ping"}}"#),
            None => format!(r#"{{"id":{id},"method":"ping"}}"#),
        };
        bad(&mut cases, line.into_bytes(), Expect::Error(-32600, id));
    }
    for method in [
        None,
        Some("5"),
        Some("null"),
        Some("{}"),
        Some("[]"),
        Some("true"),
    ] {
        let id = next_id();
        let line = match method {
            Some(m) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{m}}}"#),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id}}}"#),
        };
        bad(&mut cases, line.into_bytes(), Expect::Error(-32600, id));
    }
    for extra in [r#""result":{}"#, r#""error":{"code":1,"message":"x"}"#] {
        let id = next_id();
        bad(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping",{extra}}}"#).into_bytes(),
            Expect::Error(-32600, id),
        );
    }
    for params in ["[]", r#"["state"]"#, r#""x""#, "5", "true"] {
        let id = next_id();
        bad(
            &mut cases,
            req(&id, "tools/call", params),
            Expect::Error(-32602, id),
        );
    }
    // params that do not fit a served method
    for params in [
        None,
        Some("{}"),
        Some("null"),
        Some(r#"{"name":5}"#),
        Some(r#"{"name":null}"#),
        Some(r#"{"name":{}}"#),
        Some(r#"{"name":[]}"#),
        Some(r#"{"name":true}"#),
        Some(r#"{"name":"state","arguments":"x"}"#),
        Some(r#"{"name":"state","arguments":[1]}"#),
        Some(r#"{"name":"state","arguments":5}"#),
        Some(r#"{"name":"state","arguments":true}"#),
        Some(r#"{"name":"state","_meta":5}"#),
    ] {
        let id = next_id();
        let line = match params {
            Some(p) => req(&id, "tools/call", p),
            None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#).into_bytes(),
        };
        bad(&mut cases, line, Expect::Error(-32602, id));
    }
    for params in [
        None,
        Some("{}"),
        Some(r#"{"uri":5}"#),
        Some(r#"{"uri":null}"#),
        Some(r#"{"uri":{}}"#),
        Some(r#"{"uri":[]}"#),
    ] {
        let id = next_id();
        let line = match params {
            Some(p) => req(&id, "resources/read", p),
            None => {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read"}}"#).into_bytes()
            }
        };
        bad(&mut cases, line, Expect::Error(-32602, id));
    }
    for (method, params) in [
        ("initialize", "{}"),
        ("initialize", r#"{"protocolVersion":5}"#),
        ("resources/list", "[]"),
        ("tools/list", "7"),
    ] {
        let id = next_id();
        bad(
            &mut cases,
            req(&id, method, params),
            Expect::Error(-32602, id),
        );
    }
    // methods this server does not have
    for method in [
        "no/such",
        "",
        "tools/calls",
        "TOOLS/CALL",
        "tools/call ",
        "rpc.discover",
        r"\u0000",
    ] {
        let id = next_id();
        cases.push(Case {
            line: req(&id, method, "{}"),
            expect: Expect::Error(-32601, id),
            malformed: false,
        });
    }
    let id = next_id();
    cases.push(Case {
        line: req(&id, "prompts/get", r#"{"name":"x"}"#),
        expect: Expect::Error(-32601, id),
        malformed: false,
    });
    // broken notifications: never answered
    for note in [
        &br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#[..],
        br#"{"jsonrpc":"1.0","method":"notifications/initialized"}"#,
        br#"{"method":5}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized""#,
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"s":"\ud800"}}"#,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{\"s\":\"\xff\"}}",
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"n":1e400}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/nope"}"#,
        br#"{"jsonrpc":"2.0","method":"x/y","params":{}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#,
    ] {
        bad(&mut cases, note.to_vec(), Expect::Nothing);
    }
    bad(
        &mut cases,
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/x","params":{}{}}}"#,
            "[".repeat(5_000),
            "]".repeat(5_000)
        )
        .into_bytes(),
        Expect::Nothing,
    );
    // responses from the client to nothing it was asked: never answered
    for resp in [
        r#"{"jsonrpc":"2.0","id":"r1","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":"r2","error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":"r3","error":5}"#,
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":"r4","result":{"n":1e400}}"#,
    ] {
        bad(&mut cases, resp.into(), Expect::Nothing);
    }
    // blank lines
    for blank in ["", " ", "\t", "\r", "   \t  "] {
        bad(&mut cases, blank.into(), Expect::Nothing);
    }
    // objects with neither an id nor a method
    for o in [
        "{}",
        r#"{"jsonrpc":"2.0"}"#,
        r#"{"params":{}}"#,
        r#"{"jsonrpc":"2.0","params":{"id":1}}"#,
    ] {
        bad(&mut cases, o.into(), null(-32600));
    }
    // something after the object
    for tail in [
        " x",
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ",",
        "]",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            [req(&id, "ping", "{}"), tail.as_bytes().to_vec()].concat(),
            parse(&id),
        );
    }
    // bad escapes and raw control characters in strings
    for s in [r"\x", r"\u12", r"\u12G4", r"\'", "\t", "\u{1}", "\u{1f}"] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(&id, format!(r#"{{"action":"get","key":"{s}"}}"#).as_bytes()),
            parse(&id),
        );
    }
    // numbers and literals JSON does not have
    for v in [
        "01",
        "+1",
        ".5",
        "1.",
        "NaN",
        "Infinity",
        "-Infinity",
        "0x10",
        "1e",
        "-",
        "1_000",
        "tru",
        "nul",
        "True",
        "None",
        "undefined",
    ] {
        let id = next_id();
        bad(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{v}}}"#).as_bytes(),
            ),
            parse(&id),
        );
    }
    // longer than 16 MiB: the id is read from the start of the line when it is there
    let pad = "x".repeat(17 * 1024 * 1024);
    let id = next_id();
    bad(
        &mut cases,
        req(&id, "ping", &format!(r#"{{"pad":"{pad}"}}"#)),
        Expect::Error(-32600, id),
    );
    bad(
        &mut cases,
        format!(r#"{{"jsonrpc":"2.0","method":"ping","params":{{"pad":"{pad}"}},"id":7}}"#)
            .into_bytes(),
        null(-32600),
    );

    // well-formed requests, some of them odd
    let good = |cases: &mut Vec<Case>, line: Vec<u8>, id: Value| {
        cases.push(Case {
            line,
            expect: Expect::Result(id),
            malformed: false,
        })
    };
    let id = next_id();
    good(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"pad":"{}"}}"#, "y".repeat(15 * 1024 * 1024)),
        ),
        id,
    );
    for (raw, echoed) in [
        ("0", json!(0)),
        ("-42", json!(-42)),
        ("5001.0", json!(5001)),
        ("7e3", json!(7000)),
        ("9223372036854775807", json!(i64::MAX)),
        ("-9223372036854775808", json!(i64::MIN)),
        (r#""""#, json!("")),
        (r#""ид-😀""#, json!("ид-😀")),
        (r#""a\u0062""#, json!("ab")),
    ] {
        good(
            &mut cases,
            format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"ping"}}"#).into_bytes(),
            echoed,
        );
    }
    let long = "L".repeat(10_000);
    good(
        &mut cases,
        format!(r#"{{"jsonrpc":"2.0","id":"{long}","method":"ping"}}"#).into_bytes(),
        json!(long),
    );
    let id = next_id();
    good(
        &mut cases,
        format!("  \t{{ \"jsonrpc\" : \"2.0\" , \"id\" : {id} , \"method\" : \"ping\" }}  \r")
            .into_bytes(),
        id,
    );
    let id = next_id();
    good(
        &mut cases,
        req(
            &id,
            "ping",
            &format!(r#"{{"d":{}{}}}"#, "[".repeat(100), "]".repeat(100)),
        ),
        id,
    );
    for value in [
        "1e-400",
        "1234567890123456789012345678901234567890",
        r#""\u0000""#,
        "\"\u{feff}\"",
        r#""\ud83d\ude00""#,
    ] {
        let id = next_id();
        good(
            &mut cases,
            call_with(
                &id,
                format!(r#"{{"action":"set","key":"k","value":{value}}}"#).as_bytes(),
            ),
            id,
        );
    }
    for (method, params) in [
        ("tools/list", "{}"),
        ("tools/list", "null"),
        ("resources/templates/list", "{}"),
        ("resources/list", "{}"),
        (
            "tools/call",
            r#"{"name":"state","arguments":{"action":"get","key":"k"}}"#,
        ),
        ("tools/call", r#"{"name":"nope"}"#),
        ("tools/call", r#"{"name":"help","arguments":null}"#),
    ] {
        let id = next_id();
        good(&mut cases, req(&id, method, params), id);
    }
    let id = next_id();
    cases.push(Case {
        line: req(&id, "resources/read", r#"{"uri":"artifact://nope"}"#),
        expect: Expect::Error(-32002, id),
        malformed: false,
    });
    cases
}
