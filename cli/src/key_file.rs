//! The key `px local` requires of its API's callers. Loopback is not an authentication
//! boundary (every user of the machine reaches 127.0.0.1), and whoever reaches the probe
//! service can read any process's memory: so `px local` makes a key at start and writes it
//! to a file only root and the user who started it (through sudo) can read, where `px run`
//! and `px trace` find it by themselves.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use px_api::secret::{ExposeSecret as _, SecretString};

/// Where `px local` writes its key, and where `px run` and `px trace` look for it.
pub(crate) const DEFAULT_KEY_FILE: &str = "/run/px/api-key";

/// The key file `px local` wrote; removed when dropped.
pub(crate) struct KeyFile {
    path: PathBuf,
    /// Who besides root may read it, as a user id.
    pub(crate) reader: Option<u32>,
}

impl KeyFile {
    /// Writes `key` to `path` (mode 0600; owned by the user who ran `sudo`, if any),
    /// replacing what was there in one rename so no reader sees half a key.
    ///
    /// # Errors
    /// When the folder cannot be made or the file cannot be written.
    pub(crate) fn write(path: &Path, key: &SecretString) -> anyhow::Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {} for the API key", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let temporary = dir.join(format!(".api-key.{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
            .with_context(|| format!("cannot write the API key to {}", temporary.display()))?;
        let reader = sudo_user();
        if let Some((uid, gid)) = reader {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .context("cannot give the API key file to the user who ran sudo")?;
        }
        writeln!(file, "{}", key.expose_secret())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot write the API key to {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: reader.map(|(uid, _)| uid),
        })
    }

    /// Who may read it, for messages: `root only` or `root and uid 1000`.
    pub(crate) fn readers(&self) -> String {
        // SAFETY: geteuid has no preconditions.
        let owner = unsafe { libc::geteuid() };
        match (self.reader, owner) {
            (Some(uid), _) => format!("root and uid {uid}"),
            (None, 0) => "root only".to_owned(),
            (None, uid) => format!("root and uid {uid}"),
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        // The key dies with the process that checks it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The user and group who ran `sudo px local`, when root runs it that way.
fn sudo_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |name: &str| std::env::var(name).ok()?.parse::<u32>().ok();
    match (id("SUDO_UID"), id("SUDO_GID")) {
        (Some(0), _) | (None, _) | (_, None) => None,
        (Some(uid), Some(gid)) => Some((uid, gid)),
    }
}

/// The key for a caller of the API: PX_API_KEY, else the file given, else `px local`'s
/// file when this user may read it (when it may not, the API's refusal says where it is).
///
/// # Errors
/// When a file named explicitly cannot be read, or a key is malformed.
pub(crate) fn caller_key(file: Option<&Path>) -> anyhow::Result<Option<SecretString>> {
    if std::env::var_os("PX_API_KEY").is_some() || file.is_some() {
        return Ok(px_api::secret::load("PX_API_KEY", file)?);
    }
    match px_api::secret::load("PX_API_KEY", Some(Path::new(DEFAULT_KEY_FILE))) {
        Ok(key) => Ok(key),
        Err(px_api::secret::SecretError::Unreadable { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
