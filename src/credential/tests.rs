use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A directory laid out as the kubelet mounts a Secret: `token -> ..data/token`, with
/// `..data` a symlink to the timestamped directory holding the current content.
struct Mount {
    dir: PathBuf,
    generation: u32,
}

impl Mount {
    fn new(test: &str, content: &str) -> Mount {
        let dir = std::env::temp_dir().join(format!(
            "preview-operator-credential-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        let mut mount = Mount { dir, generation: 0 };
        mount.write(content);
        symlink("..data/token", mount.file()).expect("the file's link");
        mount
    }

    fn file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Writes `content` into a new directory and swaps `..data` to it by renaming a new
    /// symlink over it, as the kubelet's atomic writer does.
    fn write(&mut self, content: &str) {
        self.generation += 1;
        let data = format!("..{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&data)).expect("a data directory");
        std::fs::write(self.dir.join(&data).join("token"), content).expect("the content");
        let tmp = self.dir.join("..data_tmp");
        symlink(&data, &tmp).expect("the new link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("the swap");
    }

    /// Takes the content away, as a broken or half-made mount would.
    fn remove(&self) {
        std::fs::remove_file(self.dir.join("..data")).expect("the link removed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn always(file: &Path) -> Credential {
    Credential::from_file("--test-file", file, Duration::ZERO).expect("a credential")
}

#[test]
fn a_file_swapped_like_the_kubelet_does_is_read_again() {
    let mut mount = Mount::new("swap", "first\n");
    let credential = always(&mount.file());
    assert_eq!(
        &*credential.current(),
        "first",
        "the trailing newline is not part of it"
    );
    let before = credential.versioned();

    mount.write("second\n");
    let after = credential.versioned();
    assert_eq!(&*after.value, "second");
    assert_ne!(
        after.version, before.version,
        "a new value is a new version"
    );
    assert_eq!(
        credential.versioned(),
        after,
        "the same content keeps its version"
    );
}

#[test]
fn a_missing_or_empty_file_keeps_the_last_good_value() {
    let mut mount = Mount::new("missing", "kept");
    let credential = always(&mount.file());
    let kept = credential.versioned();

    mount.remove();
    assert_eq!(credential.versioned(), kept, "missing");
    mount.write("\n");
    assert_eq!(credential.versioned(), kept, "empty");
    mount.write("back");
    assert_eq!(
        &*credential.current(),
        "back",
        "a good value again is taken"
    );
}

#[test]
fn the_file_is_not_read_again_before_the_recheck_interval() {
    let mut mount = Mount::new("interval", "first");
    let credential = Credential::from_file("--test-file", &mount.file(), Duration::from_secs(3600))
        .expect("a credential");
    mount.write("second");
    assert_eq!(&*credential.current(), "first");
}

#[test]
fn clones_see_the_change_one_of_them_read() {
    let mut mount = Mount::new("clones", "first");
    let credential = always(&mount.file());
    let clone = credential.clone();
    mount.write("second");
    assert_eq!(&*credential.current(), "second");
    assert_eq!(clone.versioned().version, credential.versioned().version);
}

#[test]
fn load_prefers_the_file_and_treats_empty_as_unset() {
    let mount = Mount::new("load", "from-file");
    let loaded = Credential::load("--x", Some(&mount.file()), Some("from-value"))
        .expect("loaded")
        .expect("set");
    assert_eq!(&*loaded.current(), "from-file");
    let value = Credential::load("--x", None, Some("v")).expect("loaded");
    assert_eq!(value.map(|c| c.current()), Some("v".into()));
    assert!(
        Credential::load("--x", None, Some(""))
            .expect("ok")
            .is_none()
    );
    assert!(Credential::load("--x", None, None).expect("ok").is_none());

    let empty = Mount::new("load-empty", "\n");
    assert!(
        Credential::load("--x", Some(&empty.file()), None)
            .expect("ok")
            .is_none()
    );
    let missing = mount.dir.join("absent");
    assert!(Credential::load("--x", Some(&missing), None).is_err());
}

#[test]
fn debug_output_never_shows_the_value() {
    let credential = Credential::fixed("hunter2");
    assert!(!format!("{credential:?}").contains("hunter2"));
}
