//! Where a value comes from: the command line over the config file over the default, with
//! the file's relative paths taken from its directory, and errors that name the flag or the
//! file and key. A section reads each of its fields with [`pick!`], which takes the key
//! from the field's name, so no key is spelled twice.

use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    Flags,
    File(&'a Path),
}

impl Origin<'_> {
    /// An error about `key` (written as in the file: `crl-file`), naming `--crl-file` on the
    /// command line, or the file and `crl-file`.
    pub(super) fn err(self, key: &str, message: impl Into<String>) -> ConfigError {
        match self {
            Origin::Flags => ConfigError::Invalid {
                source_name: "command line".into(),
                field: format!("--{key}"),
                message: message.into(),
            },
            Origin::File(p) => ConfigError::Invalid {
                source_name: p.display().to_string(),
                field: key.to_string(),
                message: message.into(),
            },
        }
    }
}

/// A field's value in one layer: whether it was given there.
pub(super) trait Given: Clone {
    fn given(&self) -> bool;
}

impl<T: Clone> Given for Option<T> {
    fn given(&self) -> bool {
        self.is_some()
    }
}

/// A repeatable flag given on the command line replaces the file's list; it does not add to it.
impl<T: Clone> Given for Vec<T> {
    fn given(&self) -> bool {
        !self.is_empty()
    }
}

/// One section of flags (`S`) as the command line and the config file give it.
pub(super) struct Layers<'a, S> {
    flags: &'a S,
    file: Option<(&'a S, &'a Path)>,
}

impl<'a, S> Layers<'a, S> {
    pub(super) fn new(flags: &'a S, file: Option<(&'a S, &'a Path)>) -> Self {
        Self { flags, file }
    }

    /// A part of both layers (a section of [`super::RunFlags`]).
    pub(super) fn section<T>(&self, part: impl Fn(&S) -> &T) -> Layers<'a, T> {
        Layers { flags: part(self.flags), file: self.file.map(|(f, p)| (part(f), p)) }
    }

    /// The command line's values alone (for what the file does not set, such as `-v`).
    pub(super) fn flags(&self) -> &'a S {
        self.flags
    }

    /// The field from the command line if given there, else from the file. Use [`pick!`].
    pub(super) fn pick<F: Given>(&self, field: &'static str, get: impl Fn(&S) -> &F) -> Picked<'a, F> {
        let flag = get(self.flags);
        match self.file {
            Some((file, path)) if !flag.given() && get(file).given() => {
                Picked { field, origin: Origin::File(path), value: get(file).clone() }
            }
            _ => Picked { field, origin: Origin::Flags, value: flag.clone() },
        }
    }
}

/// `pick!(layers, field)`: [`Layers::pick`] with the key taken from the field's name.
macro_rules! pick {
    ($layers:expr, $field:ident) => {
        $layers.pick(stringify!($field), |s| &s.$field)
    };
}
pub(super) use pick;

/// A field's value (an `Option` or a list), its key and where it came from.
pub(super) struct Picked<'a, F> {
    field: &'static str,
    origin: Origin<'a>,
    value: F,
}

impl<F> Picked<'_, F> {
    /// An error about this value, naming the flag, or the file and key.
    pub(super) fn err(&self, message: impl Into<String>) -> ConfigError {
        self.origin.err(&self.field.replace('_', "-"), message)
    }

    /// A path from the file is relative to the file's directory.
    fn in_file_dir(&self, p: PathBuf) -> PathBuf {
        match self.origin {
            Origin::File(file) if p.is_relative() => file.parent().map_or(p.clone(), |dir| dir.join(&p)),
            _ => p,
        }
    }
}

impl<T> Picked<'_, Option<T>> {
    pub(super) fn get(self) -> Option<T> {
        self.value
    }

    /// The value, or the default when neither the command line nor the file gives one.
    pub(super) fn or(self, default: T) -> T {
        self.value.unwrap_or(default)
    }

    /// The value, or an error saying what to give (`hint`).
    pub(super) fn required(self, hint: &str) -> Result<T, ConfigError> {
        match self.value {
            Some(v) => Ok(v),
            None => Err(self.err(format!("is required ({hint})"))),
        }
    }

    /// A rule its type does not carry (a range): a given value must pass `ok`, or the
    /// error says `rule`.
    pub(super) fn check(self, ok: impl FnOnce(&T) -> bool, rule: &str) -> Result<Self, ConfigError> {
        match &self.value {
            Some(v) if !ok(v) => Err(self.err(rule)),
            _ => Ok(self),
        }
    }
}

impl Picked<'_, Option<PathBuf>> {
    /// The path, relative to the file's directory when the file gave it.
    pub(super) fn path(self) -> Self {
        let value = self.value.clone().map(|p| self.in_file_dir(p));
        Self { value, ..self }
    }
}

impl<T> Picked<'_, Vec<T>> {
    /// The list if given, else an error saying what to give (`hint`).
    pub(super) fn required(self, hint: &str) -> Result<Self, ConfigError> {
        if self.value.is_empty() { Err(self.err(format!("is required ({hint})"))) } else { Ok(self) }
    }

    /// Checks each value given against the others (the list alone: the layer is whole).
    pub(super) fn check_all(self, rule: impl Fn(&T, &[T]) -> Result<(), String>) -> Result<Self, ConfigError> {
        for (i, v) in self.value.iter().enumerate() {
            rule(v, &self.value[..i]).map_err(|m| self.err(m))?;
        }
        Ok(self)
    }

    pub(super) fn list(self) -> Vec<T> {
        self.value
    }
}

impl Picked<'_, Vec<PathBuf>> {
    /// The paths, relative to the file's directory when the file gave them.
    pub(super) fn paths(self) -> Vec<PathBuf> {
        self.value.iter().map(|p| self.in_file_dir(p.clone())).collect()
    }
}
