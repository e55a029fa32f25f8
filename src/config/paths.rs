//! Paths as the config file writes them.

use std::path::{Path, PathBuf};

/// `path` as written in the config: absolute, or relative to the config
/// file's folder `base`.
pub(super) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
