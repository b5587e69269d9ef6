//! Builds the `LD_PRELOAD` shims of the fault tests (`tests/support/*.c`)
//! with the system's C compiler.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `tests/support/{name}.c` into `{work}/lib{name}.so` and returns
/// its path.
///
/// # Panics
///
/// If there is no C compiler `cc`, or the shim does not compile.
pub fn build_shim(name: &str, work: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/support/{name}.c"));
    let library = work.join(format!("lib{name}.so"));
    let compiled = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run the C compiler `cc` to build {} ({error}): \
                 this test needs one (CI has gcc)",
                source.display()
            )
        });
    assert!(
        compiled.status.success(),
        "compiling {}: {}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    library
}
