//! `soloader rss-worker` processes: each loads a library (with soloader,
//! glibc's `dlopen`, or `read`), reports what it mapped on stdout, and
//! waits until it is killed, so that its memory can be measured from
//! outside. The report protocol is parsed here independently of the
//! binary.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use soloader::mem::{self, Measurement, Region, SegmentKind};

use super::SOLOADER;

/// What a worker reported.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// The file it loaded.
    pub path: String,
    pub regions: Vec<Region>,
    /// The pages its load wrote (`written` lines).
    pub written: BTreeSet<usize>,
    /// The value of `--call`, if any.
    pub result: Option<i64>,
    /// Free-form notes (`note` lines), e.g. relocation cache use.
    pub notes: Vec<String>,
}

/// Live workers, killed on drop.
pub struct Workers {
    children: Vec<Child>,
    pub reports: Vec<WorkerReport>,
}

impl Workers {
    /// Starts `n` workers loading `lib` with `method`, each calling
    /// `call` (function and arguments) if not empty, with the relocation
    /// cache in `cache` if any; returns once all have reported. Panics
    /// if a worker reports no region or stops before `ready`.
    pub fn start(
        method: &str,
        lib: &Path,
        call: &[&str],
        cache: Option<&Path>,
        n: usize,
    ) -> Workers {
        let mut w = Workers {
            children: Vec::new(),
            reports: Vec::new(),
        };
        for _ in 0..n {
            let mut cmd = Command::new(SOLOADER);
            cmd.args(["rss-worker", "--loader", method]).arg(lib);
            if !call.is_empty() {
                cmd.arg("--call").args(call);
            }
            if let Some(d) = cache {
                cmd.arg("--relocation-cache").arg(d);
            }
            let child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting a worker");
            w.children.push(child);
        }
        for i in 0..n {
            let out = w.children[i].stdout.take().expect("worker stdout");
            let mut r = WorkerReport::default();
            let mut ready = false;
            for line in BufReader::new(out).lines() {
                let line = line.expect("reading a worker");
                let mut f = line.split(' ');
                let hex = |s: Option<&str>| {
                    let s = s.unwrap_or_else(|| panic!("worker {i}: short line {line:?}"));
                    usize::from_str_radix(s, 16)
                        .unwrap_or_else(|_| panic!("worker {i}: bad number in {line:?}"))
                };
                match f.next() {
                    Some("ready") => {
                        ready = true;
                        break;
                    }
                    Some("path") => r.path = line["path ".len()..].to_string(),
                    Some("region") => {
                        let kind = SegmentKind::from_name(f.next().unwrap()).unwrap();
                        let start = hex(f.next());
                        let end = hex(f.next());
                        let file_offset = match f.next() {
                            Some("-") => None,
                            o => Some(hex(o) as u64),
                        };
                        r.regions.push(Region {
                            kind,
                            range: start..end,
                            file_offset,
                        });
                    }
                    Some("written") => {
                        r.written.insert(hex(f.next()));
                    }
                    Some("result") => r.result = f.next().and_then(|v| v.parse().ok()),
                    Some("note") => r.notes.push(line["note ".len()..].to_string()),
                    _ => {}
                }
            }
            assert!(ready, "worker {i} did not report");
            assert!(!r.regions.is_empty(), "worker {i} reported no region");
            w.reports.push(r);
        }
        w
    }

    pub fn pids(&self) -> Vec<i32> {
        self.children.iter().map(|c| c.id() as i32).collect()
    }

    /// Each worker's measurement over its reported regions.
    pub fn measure(&self) -> Vec<Measurement> {
        self.pids()
            .iter()
            .zip(&self.reports)
            .map(|(pid, r)| mem::measure(*pid, &r.regions).expect("measuring a worker"))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
