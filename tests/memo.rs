//! Remembered symbol resolutions are only reused for the same files in the
//! same scope: change a dependency in place and the next load looks again.

use soloader::Library;
use std::path::{Path, PathBuf};

fn lib(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLOADER_TESTLIBS")).join(name)
}

fn who(dir: &Path) -> i32 {
    let l = Library::open(dir.join("libdup_ab.so")).unwrap();
    // SAFETY: signature from testlibs/dupuser.c.
    let who = unsafe { l.get::<extern "C" fn() -> i32>("who").unwrap() };
    who()
}

#[test]
fn a_dependency_changed_in_place_is_looked_up_again() {
    let dir = std::env::temp_dir().join(format!("soloader-memo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for n in ["libdup_a.so", "libdup_b.so", "libdup_ab.so"] {
        std::fs::copy(lib(n), dir.join(n)).unwrap();
    }
    assert_eq!(who(&dir), b'a' as i32);
    assert_eq!(
        who(&dir),
        b'a' as i32,
        "second load, from remembered resolutions"
    );
    // Same inode, new contents: libdup_a.so now holds libarith's code,
    // which has no which(): the lookup must go on to libdup_b. Reusing the
    // remembered "which() is in module libdup_a at offset X" would jump
    // into the middle of libarith instead.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        dir.join("libdup_a.so"),
        std::fs::read(lib("libarith.so")).unwrap(),
    )
    .unwrap();
    let w = who(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(w, b'b' as i32, "the change was noticed");
}
