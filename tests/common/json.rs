//! A small JSON reader for the output of `soloader … --json`: strict
//! enough to reject what is not JSON, with positions in its panics.

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no member {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    /// A number, as an unsigned integer (truncated).
    pub fn num(&self) -> u64 {
        self.f64() as u64
    }

    /// A number, as it is.
    pub fn f64(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }

    /// A `"0x…"` string as a number.
    pub fn hex(&self) -> u64 {
        let s = self.str();
        u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("not hex: {s}"))
    }
}

/// Parses a whole JSON document; panics with the position on error.
pub fn parse_json(text: &str) -> Json {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, p.b.len(), "trailing text after JSON at byte {}", p.i);
    v
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.b.get(self.i),
            Some(&c),
            "expected {:?} at byte {}",
            c as char,
            self.i
        );
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    let v = self.value();
                    m.push((k, v));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Json::Obj(m);
                        }
                        _ => panic!("bad object at byte {}", self.i),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Json::Arr(a);
                }
                loop {
                    a.push(self.value());
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Json::Arr(a);
                        }
                        _ => panic!("bad array at byte {}", self.i),
                    }
                }
            }
            Some(b'"') => Json::Str(self.string()),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let s = self.i;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[s..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("bad number {t}")))
            }
            _ => panic!("unexpected input at byte {}", self.i),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(
            self.b[self.i..].starts_with(w.as_bytes()),
            "bad literal at byte {}",
            self.i
        );
        self.i += w.len();
        v
    }

    fn string(&mut self) -> String {
        assert_eq!(self.b.get(self.i), Some(&b'"'), "string at byte {}", self.i);
        self.i += 1;
        let mut s = String::new();
        loop {
            let c = *self.b.get(self.i).expect("unterminated string");
            self.i += 1;
            match c {
                b'"' => return s,
                b'\\' => {
                    let e = self.b[self.i];
                    self.i += 1;
                    match e {
                        b'"' => s.push('"'),
                        b'\\' => s.push('\\'),
                        b'/' => s.push('/'),
                        b'n' => s.push('\n'),
                        b'r' => s.push('\r'),
                        b't' => s.push('\t'),
                        b'b' => s.push('\u{8}'),
                        b'f' => s.push('\u{c}'),
                        b'u' => {
                            let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            let n = u32::from_str_radix(h, 16).unwrap();
                            s.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                        }
                        _ => panic!("bad escape at byte {}", self.i),
                    }
                }
                c if c < 0x20 => panic!("control character in string at byte {}", self.i),
                _ => {
                    // Copy the whole UTF-8 sequence.
                    let start = self.i - 1;
                    let len = match c {
                        0xf0..=0xff => 4,
                        0xe0..=0xef => 3,
                        0xc0..=0xdf => 2,
                        _ => 1,
                    };
                    self.i = start + len;
                    s.push_str(std::str::from_utf8(&self.b[start..self.i]).unwrap());
                }
            }
        }
    }
}

/// `soloader rss ARGS... --json`, parsed (schema `soloader-rss/1`); panics
/// with its stderr on failure.
pub fn rss_json(args: &[&str]) -> Json {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soloader"))
        .arg("rss")
        .args(args)
        .arg("--json")
        .output()
        .expect("running soloader rss");
    assert!(
        out.status.success(),
        "soloader rss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = parse_json(&String::from_utf8(out.stdout).expect("UTF-8 output"));
    assert_eq!(doc.get("schema").str(), "soloader-rss/1");
    doc
}

/// The run of loader `loader` in an rss document.
pub fn run_of<'a>(doc: &'a Json, loader: &str) -> &'a Json {
    doc.get("runs")
        .arr()
        .iter()
        .find(|r| r.get("loader").str() == loader)
        .unwrap_or_else(|| panic!("no {loader} run"))
}
