//! TEMPORARY stub until search.rs lands.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
pub(crate) struct SearchConfig {
    pub library_path: Vec<PathBuf>,
}
impl SearchConfig {
    pub(crate) fn new(explicit: Option<&[PathBuf]>) -> SearchConfig {
        let lp = match explicit {
            Some(e) => e.to_vec(),
            None => std::env::var("LD_LIBRARY_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
        };
        SearchConfig { library_path: lp }
    }
}
pub(crate) fn find_library(
    name: &str,
    needed_by: Option<&Path>,
    rpath: &[PathBuf],
    runpath: &[PathBuf],
    config: &SearchConfig,
    on_try: &mut dyn FnMut(&Path, &'static str, bool),
) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let mut tried = vec![];
    let dirs = rpath
        .iter()
        .chain(config.library_path.iter())
        .chain(runpath.iter())
        .cloned()
        .chain(
            ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
                .iter()
                .map(PathBuf::from),
        );
    for d in dirs {
        let p = d.join(name);
        let ok = p.is_file();
        on_try(&p, "dir", ok);
        if ok {
            return Ok(p);
        }
        tried.push(p);
    }
    Err(Error::NotFound {
        name: name.into(),
        needed_by: needed_by.map(|p| p.to_path_buf()),
        tried,
    })
}
pub(crate) fn split_path_list(list: &str, origin: &Path) -> Vec<PathBuf> {
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(s.replace("$ORIGIN", &origin.to_string_lossy())))
        .collect()
}
