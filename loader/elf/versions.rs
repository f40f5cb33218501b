//! Symbol versioning: `DT_VERDEF` and `DT_VERNEED`, indexed the way
//! `DT_VERSYM` refers to them (glibc's `l_versions[]`).

use std::path::Path;

use super::dynamic::{cstr_at, DynInfo};
use super::view::View;
use crate::error::{Error, Result};

/// `VER_FLG_WEAK`: a missing version is only a warning.
pub(crate) const VER_FLG_WEAK: u16 = 2;
/// Upper bound on version entries walked (hostile chains).
const MAX_ENTRIES: usize = 0x8000;

/// One version, defined by the object or needed from a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub name: Box<[u8]>,
    pub hash: u32,
    /// `None` for a definition; the dependency's name for a need.
    pub file: Option<String>,
    /// `VER_FLG_*`.
    pub flags: u16,
    /// The need is marked hidden (`vna_other & 0x8000`).
    pub hidden: bool,
}

/// Versions by index.
#[derive(Debug, Clone, Default)]
pub(crate) struct VersionTable {
    slots: Vec<Option<Version>>,
}

impl VersionTable {
    /// Version `ndx` (without the hidden bit), if defined or needed.
    pub(crate) fn get(&self, ndx: usize) -> Option<&Version> {
        self.slots.get(ndx).and_then(|v| v.as_ref())
    }

    /// The versions this object defines, by index, as (name, hash).
    pub(crate) fn definitions(&self) -> Vec<Option<(Box<[u8]>, u32)>> {
        self.slots
            .iter()
            .map(|v| match v {
                Some(v) if v.file.is_none() => Some((v.name.clone(), v.hash)),
                _ => None,
            })
            .collect()
    }

    /// Every version needed from a dependency.
    pub(crate) fn needs(&self) -> impl Iterator<Item = &Version> {
        self.slots.iter().flatten().filter(|v| v.file.is_some())
    }

    /// Whether this object defines a version called `name`.
    pub(crate) fn defines(&self, name: &[u8]) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|v| v.file.is_none() && &v.name[..] == name)
    }

    /// How many versions are defined, without the file's own base entry.
    pub(crate) fn defined_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|v| v.file.is_none() && v.flags & 1 == 0)
            .count()
    }

    fn put(&mut self, path: &Path, ndx: u16, v: Version, at: u64) -> Result<()> {
        let ndx = usize::from(ndx & 0x7fff);
        if ndx >= self.slots.len() {
            self.slots.resize(ndx + 1, None);
        }
        if self.slots[ndx].is_some() {
            return Err(Error::malformed(
                path,
                format!("version index {ndx} is defined twice"),
                Some(at),
            ));
        }
        self.slots[ndx] = Some(v);
        Ok(())
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Reads `DT_VERDEF` and `DT_VERNEED` into one index.
pub(crate) fn parse(path: &Path, ro: &View, strtab: &[u8], d: &DynInfo) -> Result<VersionTable> {
    let mut t = VersionTable::default();
    let name_at = |off: u32, at: u64| -> Result<Box<[u8]>> {
        cstr_at(strtab, u64::from(off))
            .map(Box::from)
            .ok_or_else(|| {
                Error::malformed(path, "version name offset is outside DT_STRTAB", Some(at))
            })
    };
    if let Some(start) = d.verdef {
        let bad =
            |what: &str, at: u64| Error::malformed(path, format!("DT_VERDEF: {what}"), Some(at));
        let max = d
            .verdefnum
            .unwrap_or(MAX_ENTRIES as u64)
            .min(MAX_ENTRIES as u64);
        let mut at = start;
        for _ in 0..max {
            let e = ro
                .bytes(at, 20)
                .ok_or_else(|| bad("entry lies outside the read-only segments", at))?;
            let (version, flags, ndx, _cnt) = (
                u16_at(e, 0).unwrap_or(0),
                u16_at(e, 2).unwrap_or(0),
                u16_at(e, 4).unwrap_or(0),
                u16_at(e, 6).unwrap_or(0),
            );
            let (hash, aux, next) = (
                u32_at(e, 8).unwrap_or(0),
                u32_at(e, 12).unwrap_or(0),
                u32_at(e, 16).unwrap_or(0),
            );
            if version != 1 {
                return Err(bad("vd_version is not 1", at));
            }
            let aux_at = at
                .checked_add(u64::from(aux))
                .ok_or_else(|| bad("vd_aux overflows", at))?;
            let a = ro
                .bytes(aux_at, 8)
                .ok_or_else(|| bad("Verdaux lies outside the read-only segments", aux_at))?;
            let name = name_at(u32_at(a, 0).unwrap_or(u32::MAX), aux_at)?;
            t.put(
                path,
                ndx,
                Version {
                    name,
                    hash,
                    file: None,
                    flags,
                    hidden: false,
                },
                at,
            )?;
            if next == 0 {
                break;
            }
            at = at
                .checked_add(u64::from(next))
                .ok_or_else(|| bad("vd_next overflows", at))?;
        }
    }
    if let Some(start) = d.verneed {
        let bad =
            |what: &str, at: u64| Error::malformed(path, format!("DT_VERNEED: {what}"), Some(at));
        let max = d
            .verneednum
            .unwrap_or(MAX_ENTRIES as u64)
            .min(MAX_ENTRIES as u64);
        let mut at = start;
        let mut walked = 0usize;
        for _ in 0..max {
            let e = ro
                .bytes(at, 16)
                .ok_or_else(|| bad("entry lies outside the read-only segments", at))?;
            let (version, cnt) = (u16_at(e, 0).unwrap_or(0), u16_at(e, 2).unwrap_or(0));
            let (file, aux, next) = (
                u32_at(e, 4).unwrap_or(0),
                u32_at(e, 8).unwrap_or(0),
                u32_at(e, 12).unwrap_or(0),
            );
            if version != 1 {
                return Err(bad("vn_version is not 1", at));
            }
            let file = String::from_utf8_lossy(&name_at(file, at)?).into_owned();
            let mut aux_at = at
                .checked_add(u64::from(aux))
                .ok_or_else(|| bad("vn_aux overflows", at))?;
            for _ in 0..cnt {
                walked += 1;
                if walked > MAX_ENTRIES {
                    return Err(bad("too many entries", at));
                }
                let a = ro
                    .bytes(aux_at, 16)
                    .ok_or_else(|| bad("Vernaux lies outside the read-only segments", aux_at))?;
                let (hash, flags, other) = (
                    u32_at(a, 0).unwrap_or(0),
                    u16_at(a, 4).unwrap_or(0),
                    u16_at(a, 6).unwrap_or(0),
                );
                let (vname, anext) = (u32_at(a, 8).unwrap_or(u32::MAX), u32_at(a, 12).unwrap_or(0));
                let name = name_at(vname, aux_at)?;
                t.put(
                    path,
                    other,
                    Version {
                        name,
                        hash,
                        file: Some(file.clone()),
                        flags,
                        hidden: other & 0x8000 != 0,
                    },
                    aux_at,
                )?;
                if anext == 0 {
                    break;
                }
                aux_at = aux_at
                    .checked_add(u64::from(anext))
                    .ok_or_else(|| bad("vna_next overflows", aux_at))?;
            }
            if next == 0 {
                break;
            }
            at = at
                .checked_add(u64::from(next))
                .ok_or_else(|| bad("vn_next overflows", at))?;
        }
    }
    Ok(t)
}
