//! The loaded set: every object soloader mapped, its reference counts and
//! state, behind one process-wide reentrant lock.
//!
//! The lock is held for a whole load or unload, constructors and
//! destructors included (as glibc holds `dl_load_lock`), and is reentrant
//! so an initialiser may call back into soloader. It is kept consistent
//! across `fork`: taken before, released (re-created) after, in parent and
//! child. The data sits in a `RefCell` whose borrows are never held while
//! library code runs, so a reentrant call finds it free.

use std::cell::{RefCell, UnsafeCell};
use std::sync::{Arc, Once};

use crate::object::Object;

/// State of one loaded object.
pub(crate) struct Entry {
    pub obj: Arc<Object>,
    /// Open `Library` handles whose root this is.
    pub opens: usize,
    /// Initialisers ran (or are running).
    pub inited: bool,
    /// Finalisers ran (or are running).
    pub finied: bool,
    /// `DF_1_NODELETE`: never unloaded.
    pub nodelete: bool,
}

/// Everything soloader has loaded.
#[derive(Default)]
pub(crate) struct Registry {
    pub entries: Vec<Entry>,
    pub exit_handler: bool,
}

impl Registry {
    /// The entry for `(dev, ino)`, if that file is loaded.
    pub(crate) fn by_file(&self, id: (u64, u64)) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.obj.file_id == id && !e.finied)
    }

    /// The entry of object `id`.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.obj.id == id)
    }
}

struct Global {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    /// How deep the current owner holds the lock (valid only for it).
    depth: UnsafeCell<usize>,
    data: RefCell<Registry>,
}

// SAFETY: `data` and `depth` are only touched while `mutex` is held.
unsafe impl Sync for Global {}

static GLOBAL: Global = Global {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    depth: UnsafeCell::new(0),
    data: RefCell::new(Registry {
        entries: Vec::new(),
        exit_handler: false,
    }),
};

static SETUP: Once = Once::new();

fn setup() {
    SETUP.call_once(|| {
        // SAFETY: initialising our own mutex before anyone uses it (the
        // Once guarantees no other thread does so concurrently) and
        // registering fork handlers that only touch it.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_RECURSIVE);
            libc::pthread_mutex_init(GLOBAL.mutex.get(), &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            );
        }
    });
}

unsafe extern "C" fn before_fork() {
    // SAFETY: our initialised recursive mutex.
    unsafe { libc::pthread_mutex_lock(GLOBAL.mutex.get()) };
}

unsafe extern "C" fn after_fork_parent() {
    // SAFETY: taken in before_fork by this thread.
    unsafe { libc::pthread_mutex_unlock(GLOBAL.mutex.get()) };
}

unsafe extern "C" fn after_fork_child() {
    // The child has one thread, with a new thread id, so the recursive
    // mutex's owner is stale: create it afresh. before_fork made sure no
    // other thread held it, so any depth recorded is this thread's own
    // (a fork from inside a constructor): take it again that often, for
    // the guards still alive on this thread's stack to release.
    // SAFETY: only this thread exists in the child.
    unsafe {
        let depth = *GLOBAL.depth.get();
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_RECURSIVE);
        libc::pthread_mutex_init(GLOBAL.mutex.get(), &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
        for _ in 0..depth {
            libc::pthread_mutex_lock(GLOBAL.mutex.get());
        }
    }
}

/// Proof that the current thread holds the loader's lock.
pub(crate) struct Guard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Guard {
    /// The registry. Do not keep the borrow while library code runs.
    pub(crate) fn registry(&self) -> std::cell::RefMut<'_, Registry> {
        GLOBAL.data.borrow_mut()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        // SAFETY: this thread holds the mutex (it made this Guard).
        unsafe {
            *GLOBAL.depth.get() -= 1;
            libc::pthread_mutex_unlock(GLOBAL.mutex.get());
        }
    }
}

thread_local! {
    /// How many `Guard`s this thread holds.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether this thread holds the loader's lock: then it must not wait for
/// the system loader's lock (`dlsym`, `dlopen`), which a thread running
/// a constructor under it may hold while it waits for ours.
pub(crate) fn held() -> bool {
    HELD.with(|h| h.get() > 0)
}

/// How many times this thread holds the loader's lock (1: one load, not
/// nested in another's constructors).
pub(crate) fn depth() -> usize {
    HELD.with(|h| h.get())
}

/// Takes the loader's lock (reentrant).
pub(crate) fn lock() -> Guard {
    setup();
    // SAFETY: the mutex was initialised by setup().
    unsafe {
        libc::pthread_mutex_lock(GLOBAL.mutex.get());
        *GLOBAL.depth.get() += 1;
    }
    HELD.with(|h| h.set(h.get() + 1));
    Guard {
        _not_send: std::marker::PhantomData,
    }
}
