//! Keys and tokens. They come from the environment or from a file, never from the command
//! line: `/proc/PID/cmdline` is readable by every user of the machine, and the PEM itself
//! records the command lines of the processes it sees. They are held as
//! [`SecretString`], whose `Debug` prints no value, so a `{:?}` of a settings struct
//! cannot put one in a log.

use std::path::{Path, PathBuf};

pub use secrecy::{ExposeSecret, SecretString};

/// Why a key or token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the key file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file or variable holds nothing.
    #[error("{what} is empty; put the key in it")]
    Empty {
        /// The file or variable.
        what: String,
    },
    /// It cannot be sent as gRPC metadata.
    #[error("{what} holds characters a key cannot have: use printable ASCII")]
    NotAscii {
        /// The file or variable.
        what: String,
    },
}

/// The secret in `file` when one is given, else in the environment variable `env`;
/// `None` when neither is set. Surrounding white space (a file's last newline) is not
/// part of it.
///
/// # Errors
/// When the file cannot be read, or what it or the variable holds is empty or not
/// printable ASCII.
pub fn load(env: &str, file: Option<&Path>) -> Result<Option<SecretString>, SecretError> {
    let (text, what) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?,
            path.display().to_string(),
        ),
        None => match std::env::var(env) {
            Ok(value) => (value, env.to_owned()),
            Err(_) => return Ok(None),
        },
    };
    parse(&text, &what).map(Some)
}

/// `text` as a key: trimmed, non-empty, printable ASCII.
fn parse(text: &str, what: &str) -> Result<SecretString, SecretError> {
    let key = text.trim();
    if key.is_empty() {
        return Err(SecretError::Empty {
            what: what.to_owned(),
        });
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecretError::NotAscii {
            what: what.to_owned(),
        });
    }
    Ok(SecretString::from(key.to_owned()))
}

/// A new random key: 32 bytes from the operating system's generator, as hex.
///
/// # Errors
/// When the generator cannot be read.
pub fn generate() -> std::io::Result<SecretString> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(SecretString::from(hex))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_wins_and_its_newline_is_not_part_of_the_key() {
        let dir = std::env::temp_dir().join(format!("px-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "s3cret\n").unwrap();
        let key = load("PX_SECRET_TEST_UNSET", Some(&file)).unwrap().unwrap();
        assert_eq!(key.expose_secret(), "s3cret");
        assert!(load("PX_SECRET_TEST_UNSET", None).unwrap().is_none());
        std::fs::write(&file, "\n").unwrap();
        let empty = load("PX_SECRET_TEST_UNSET", Some(&file)).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
        let missing = load("X", Some(&dir.join("nope"))).unwrap_err();
        assert!(missing.to_string().contains("cannot read the key file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_shows_no_value_and_keys_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.expose_secret().len(), 64);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(a.expose_secret()));
        assert!(
            parse("a key", "X").is_err(),
            "a space cannot go in metadata"
        );
    }
}
