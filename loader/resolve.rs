//! Resolve dependencies: find, load and link up the `DT_NEEDED` tree.
//!
//! Breadth-first from the root, as glibc does. Each name is first matched
//! against what is already loaded (by `DT_SONAME`), then searched for;
//! each file is loaded at most once (identified by device and inode).
//! Libraries of the glibc family, and any library the host process already
//! has, are bound to the host's copy. Everything mapped by a load that
//! fails is unmapped again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::host;
use crate::map::{FailPoint, Sys};
use crate::object::{Dep, Object};
use crate::registry::Registry;
use crate::search::{self, Opened, SearchConfig};
use crate::trace::{Event, Tracer};

/// What a load produced.
pub(crate) struct Tree {
    /// The library asked for.
    pub root: Arc<Object>,
    /// Objects mapped by this load (not yet in the registry), breadth-first.
    pub new: Vec<Arc<Object>>,
}

/// Everything a load needs to know.
pub(crate) struct Loader<'a> {
    pub tracer: &'a Tracer,
    pub fail: Option<&'a FailPoint>,
    pub search: SearchConfig,
    /// Relocation cache (opt-in, `relcache`): the checked directory, if any.
    pub relcache: Option<&'a crate::relcache::Dir>,
    /// The cache may count on the host's layout (`Options::relocation_cache_forked`).
    pub relcache_forked: bool,
    /// Load `libstdc++` with soloader when the host has none.
    pub own_libstdcxx: bool,
    /// May a host library the system loader must load first end this
    /// attempt (see [`Deferred`]) instead of being loaded under soloader's
    /// lock? Only for a load that holds the lock once (not one nested in
    /// another library's constructor).
    pub may_defer: bool,
    /// The host library that ended this attempt, if one did.
    pub deferred: std::cell::RefCell<Option<Deferred>>,
    /// Host libraries loaded between earlier attempts of this load (the
    /// trace says they were loaded for it).
    pub loaded_between: Vec<String>,
}

/// A glibc-family library (or one the host already names) that the system
/// loader must load before this load can go on. The system `dlopen` takes
/// the system loader's lock, which a thread running a constructor for it
/// may hold while waiting for soloader's: so the load is undone, the lock
/// released, the library loaded, and the load tried again.
pub(crate) struct Deferred {
    /// The `DT_NEEDED` name.
    pub name: String,
    /// The library that needs it.
    pub needed_by: PathBuf,
}

struct Queued {
    obj: Arc<Object>,
    /// `DT_RPATH` directories of the objects that loaded this one (glibc
    /// inherits RPATH along the chain of loaders; RUNPATH is not inherited).
    inherited_rpath: Vec<PathBuf>,
}

impl<'a> Loader<'a> {
    /// The memory calls for work on `path`.
    pub(crate) fn sys(&self, path: &'a Path) -> Sys<'a> {
        Sys {
            path,
            tracer: self.tracer,
            fail: self.fail,
            relcache: self.relcache,
        }
    }

    fn trying(&self) -> impl FnMut(&Path, &'static str, bool) + '_ {
        move |p: &Path, source: &'static str, found: bool| {
            self.tracer.emit(|| Event::SearchTry {
                path: p.to_path_buf(),
                source,
                found,
            })
        }
    }

    /// Finds the root file by path or bare name, opened (with what the
    /// search learnt of it, see [`Opened`]).
    /// `caller` is the library that called `dlopen`, whose `RPATH` and
    /// `RUNPATH` apply (as in glibc).
    pub(crate) fn find_root(
        &self,
        name: &str,
        caller: Option<&Object>,
    ) -> Result<(PathBuf, Opened)> {
        self.tracer.emit(|| Event::Search {
            name: name.to_string(),
            needed_by: caller.map(|c| c.path.clone()),
        });
        let mut on_try = self.trying();
        let (rpath, runpath) = caller.map(|c| search_dirs(c, &[])).unwrap_or_default();
        search::find_library(
            name,
            caller.map(|c| c.path.as_path()),
            &rpath,
            &runpath,
            &self.search,
            &mut on_try,
        )
    }

    /// Loads `path` and everything it needs that is not loaded yet.
    pub(crate) fn load_tree(&self, reg: &Registry, path: &Path, opened: Opened) -> Result<Tree> {
        let mut new: Vec<Arc<Object>> = Vec::new();
        match self.load_tree_inner(reg, path, opened, &mut new) {
            Ok(root) => Ok(Tree { root, new }),
            Err(e) => {
                for o in &new {
                    o.unmap(&self.sys(&o.path));
                }
                Err(e)
            }
        }
    }

    fn load_tree_inner(
        &self,
        reg: &Registry,
        path: &Path,
        mut opened: Opened,
        new: &mut Vec<Arc<Object>>,
    ) -> Result<Arc<Object>> {
        let id = opened.info(path)?.id;
        if let Some(e) = reg.by_file(id) {
            return Ok(e.obj.clone());
        }
        let root = Arc::new(Object::load(path, opened, &self.sys(path))?);
        new.push(root.clone());
        let mut queue = VecDeque::from([Queued {
            obj: root.clone(),
            inherited_rpath: Vec::new(),
        }]);
        while let Some(q) = queue.pop_front() {
            let obj = &q.obj;
            let (rpath, runpath) = search_dirs(obj, &q.inherited_rpath);
            let mut deps = Vec::with_capacity(obj.tables.needed.len());
            for name in &obj.tables.needed {
                let dep = self.dependency(reg, new, obj, name, &rpath, &runpath, &mut queue)?;
                deps.push(dep);
            }
            let _ = obj.deps.set(deps);
        }
        for o in new.iter() {
            let _ = o.search_list.set(search_list(o));
        }
        Ok(root)
    }

    #[allow(clippy::too_many_arguments)]
    fn dependency(
        &self,
        reg: &Registry,
        new: &mut Vec<Arc<Object>>,
        by: &Arc<Object>,
        name: &str,
        rpath: &[PathBuf],
        runpath: &[PathBuf],
        queue: &mut VecDeque<Queued>,
    ) -> Result<Dep> {
        self.tracer.emit(|| Event::Search {
            name: name.to_string(),
            needed_by: Some(by.path.clone()),
        });
        // Already loaded by soloader under this name?
        let known = new
            .iter()
            .find(|o| o.soname() == name)
            .cloned()
            .or_else(|| {
                reg.entries
                    .iter()
                    .find(|e| !e.finied && e.obj.soname() == name)
                    .map(|e| e.obj.clone())
            });
        if let Some(o) = known {
            self.tracer.emit(|| Event::AlreadyLoaded {
                path: o.path.clone(),
                refcount: reg
                    .entries
                    .iter()
                    .find(|e| e.obj.id == o.id)
                    .map_or(0, |e| e.opens),
            });
            return Ok(Dep::Loaded(Arc::downgrade(&o)));
        }
        // The host's copy: always for the glibc family, and for anything
        // the host already has.
        let ix = host::index();
        let own = self.own_libstdcxx && name.starts_with("libstdc++.so");
        if (host::is_host_family(name) && !own) || ix.by_name(name).is_some() {
            if self.may_defer && !host::has(name) {
                *self.deferred.borrow_mut() = Some(Deferred {
                    name: name.to_string(),
                    needed_by: by.path.clone(),
                });
                return Err(Error::Host {
                    name: name.to_string(),
                    needed_by: Some(by.path.clone()),
                    message: "to be loaded by the system loader once soloader's lock is released"
                        .into(),
                });
            }
            let (h, newly_loaded) = host::ensure_loaded(name, Some(&by.path))?;
            let newly_loaded = newly_loaded || self.loaded_between.iter().any(|n| n == name);
            self.tracer.emit(|| Event::HostLibrary {
                name: name.to_string(),
                path: h.name.clone(),
                newly_loaded,
            });
            return Ok(Dep::Host(h));
        }
        let mut on_try = self.trying();
        let (path, mut opened) = search::find_library(
            name,
            Some(&by.path),
            rpath,
            runpath,
            &self.search,
            &mut on_try,
        )?;
        let id = opened.info(&path)?.id;
        if let Some(o) = new.iter().find(|o| o.file_id == id) {
            return Ok(Dep::Loaded(Arc::downgrade(o)));
        }
        if let Some(e) = reg.by_file(id) {
            self.tracer.emit(|| Event::AlreadyLoaded {
                path: e.obj.path.clone(),
                refcount: e.opens,
            });
            return Ok(Dep::Loaded(Arc::downgrade(&e.obj)));
        }
        let obj = Arc::new(Object::load(&path, opened, &self.sys(&path))?);
        new.push(obj.clone());
        let mut inherited = rpath.to_vec();
        inherited.dedup();
        queue.push_back(Queued {
            obj: obj.clone(),
            inherited_rpath: if runpath.is_empty() {
                inherited
            } else {
                Vec::new()
            },
        });
        Ok(Dep::Loaded(Arc::downgrade(&obj)))
    }
}

/// The `RPATH` and `RUNPATH` directories that apply to names `obj` asks
/// for. `RPATH` counts only when the object has no `RUNPATH`, and is
/// followed by the `RPATH`s `inherited` from the objects that loaded it.
pub(crate) fn search_dirs(obj: &Object, inherited: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let origin = obj.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let runpath = obj
        .tables
        .runpath
        .as_deref()
        .map(|r| search::split_path_list(r, &origin))
        .unwrap_or_default();
    let mut rpath = Vec::new();
    if obj.tables.runpath.is_none() {
        if let Some(r) = obj.tables.rpath.as_deref() {
            rpath.extend(search::split_path_list(r, &origin));
        }
        rpath.extend(inherited.iter().cloned());
    }
    (rpath, runpath)
}

/// `obj` and its dependencies, breadth-first, each once.
pub(crate) fn search_list(obj: &Arc<Object>) -> Vec<Dep> {
    let mut out: Vec<Dep> = vec![Dep::Loaded(Arc::downgrade(obj))];
    let mut seen_loaded: Vec<u64> = vec![obj.id];
    let mut seen_host: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < out.len() {
        let deps = match &out[i] {
            Dep::Loaded(w) => w.upgrade().and_then(|o| o.deps.get().cloned()),
            Dep::Host(_) => None,
        };
        for d in deps.unwrap_or_default() {
            match &d {
                Dep::Loaded(w) => {
                    let Some(o) = w.upgrade() else { continue };
                    if seen_loaded.contains(&o.id) {
                        continue;
                    }
                    seen_loaded.push(o.id);
                }
                Dep::Host(h) => {
                    if seen_host.contains(&h.base) {
                        continue;
                    }
                    seen_host.push(h.base);
                }
            }
            out.push(d);
        }
        i += 1;
    }
    out
}

/// The order in which new objects are relocated and initialised:
/// dependencies first, exactly as glibc 2.36 orders `l_initfini`.
///
/// glibc's `_dl_sort_maps_dfs` walks the breadth-first list from its end,
/// doing a depth-first traversal over each object's `DT_NEEDED` edges and
/// prepending each object once all its dependencies are placed (a
/// reverse post-order); the root is then forced to the front, and
/// initialisers run over that list backwards. This returns the list in
/// that backwards (initialisation) order. For a diamond a→{b,c}, b→d, c→d
/// it gives d, c, b, a, which is what glibc prints.
pub(crate) fn init_order(root: &Arc<Object>, new: &[Arc<Object>]) -> Vec<Arc<Object>> {
    let mut order = post_order(new);
    // force_first: the root is initialised last.
    if let Some(pos) = order.iter().position(|o| o.id == root.id) {
        let r = order.remove(pos);
        order.push(r);
    }
    order
}

/// The order in which `objs` (given in load order) are finalised:
/// dependents first, as glibc 2.36's `_dl_sort_maps` sorts for `dlclose`
/// and `_dl_fini` — the same depth-first traversal as [`init_order`], but
/// without moving the opened library, and run forwards. Where the opened
/// library sits in a dependency cycle this is not the reverse of the
/// initialisation order, exactly as in glibc.
pub(crate) fn fini_order(objs: &[Arc<Object>]) -> Vec<Arc<Object>> {
    let mut order = post_order(objs);
    order.reverse();
    order
}

/// glibc's `_dl_sort_maps_dfs` walk over `objs`, from the end of the list,
/// following `DT_NEEDED` edges within `objs`: each object after everything
/// it depends on (glibc builds the same list back to front and reads it
/// backwards for initialisers).
fn post_order(objs: &[Arc<Object>]) -> Vec<Arc<Object>> {
    fn dfs(o: &Arc<Object>, set: &[Arc<Object>], seen: &mut Vec<u64>, out: &mut Vec<Arc<Object>>) {
        if seen.contains(&o.id) {
            return;
        }
        seen.push(o.id);
        for d in o.deps.get().map(|v| v.as_slice()).unwrap_or(&[]) {
            if let Dep::Loaded(w) = d {
                if let Some(dep) = w.upgrade() {
                    if set.iter().any(|n| n.id == dep.id) {
                        dfs(&dep, set, seen, out);
                    }
                }
            }
        }
        out.push(o.clone());
    }
    let mut out = Vec::with_capacity(objs.len());
    let mut seen = Vec::new();
    for o in objs.iter().rev() {
        dfs(o, objs, &mut seen, &mut out);
    }
    out
}

/// Upgrades a weak dependency edge.
pub(crate) fn live(w: &Weak<Object>) -> Option<Arc<Object>> {
    w.upgrade()
        .filter(|o| !o.unmapped.load(std::sync::atomic::Ordering::Acquire))
}

/// Refuses to load a glibc-family library with soloader.
pub(crate) fn refuse_host_family(name: &str) -> Result<()> {
    if host::is_host_family(name) {
        return Err(Error::unsupported(
            Path::new(name),
            "this library belongs to the system loader's family (glibc, libgcc_s, libstdc++): \
             a second copy in one process would break it; use it through the host",
        ));
    }
    Ok(())
}
