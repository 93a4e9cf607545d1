//! Typed, layered service configuration: `T::default()`, then a TOML file, then `MEERKAT_*`
//! environment variables. A bad value is reported as one line naming the key and where it came
//! from, so an operator can fix it without reading a backtrace.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "MEERKAT_";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "MEERKAT_CONFIG";
/// Command-line flag naming the config file.
pub const CONFIG_FLAG: &str = "--config";

/// Name of the metadata of the environment layer; errors from it name the variable.
const ENV_LAYER: &str = "environment variable";

/// A config that cannot be loaded. Displays as one line naming the key (when there is one) and
/// where its value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `c2s_addr`; `None` when the whole source is bad.
    pub key: Option<String>,
    /// Where the value came from: an environment variable name, a file path, or a layer name.
    pub origin: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid config: ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{} (from {})", self.message, self.origin)
    }
}

/// Loads a service config: `T::default()`, then a TOML file (path from `--config <path>` in
/// `std::env::args` or env `MEERKAT_CONFIG`; a missing explicit file is an error), then
/// `MEERKAT_*` env vars with flat keys (`MEERKAT_C2S_ADDR` -> `c2s_addr`; lowercase).
pub fn load<T: DeserializeOwned + Serialize + Default>() -> Result<T, ConfigError> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let file = match config_path_from_args(&args)? {
        Some(path) => Some(path),
        None => std::env::var_os(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    };
    // Variables that are not Unicode cannot be config values; skip them rather than panic.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let figment = base::<T>();
    let figment = match &file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError {
                    key: None,
                    origin: path.display().to_string(),
                    message: "config file not found".to_owned(),
                });
            }
            figment.merge(Toml::file_exact(path))
        }
        None => figment,
    };
    extract(figment.merge(EnvPairs::new(&env)))
}

/// Same as [`load`], from explicit sources for tests: defaults overlaid by the given TOML text and
/// the given environment-like pairs. Pairs are named as in the environment
/// (`("MEERKAT_C2S_ADDR", "127.0.0.1:5222")`); names without the `MEERKAT_` prefix are ignored,
/// as they are in the real environment.
pub fn load_from<T: DeserializeOwned + Serialize + Default>(
    toml: Option<&str>,
    env: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let figment = base::<T>();
    let figment = match toml {
        Some(text) => figment.merge(Toml::string(text)),
        None => figment,
    };
    extract(figment.merge(EnvPairs::new(env)))
}

/// On error prints exactly one line to stderr, e.g. `meerkat: invalid config: c2s_addr: invalid
/// socket address syntax (from MEERKAT_C2S_ADDR)`, and exits with code 2.
pub fn load_or_exit<T: DeserializeOwned + Serialize + Default>() -> T {
    match load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("meerkat: {error}");
            std::process::exit(2);
        }
    }
}

fn base<T: Serialize + Default>() -> Figment {
    Figment::from(Serialized::defaults(T::default()))
}

fn extract<T: DeserializeOwned>(figment: Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|e| to_config_error(&e))
}

/// `--config <path>` or `--config=<path>`; the last one wins, like most CLIs.
fn config_path_from_args(args: &[OsString]) -> Result<Option<PathBuf>, ConfigError> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(arg_str) = arg.to_str() else {
            continue;
        };
        if arg_str == CONFIG_FLAG {
            match iter.next() {
                Some(path) => found = Some(PathBuf::from(path)),
                None => {
                    return Err(ConfigError {
                        key: None,
                        origin: "command line".to_owned(),
                        message: format!("{CONFIG_FLAG} needs a path"),
                    })
                }
            }
        } else if let Some(path) = arg_str.strip_prefix("--config=") {
            found = Some(PathBuf::from(path));
        }
    }
    Ok(found)
}

/// The `MEERKAT_*` layer: flat keys, values parsed like figment's `Env` (numbers, booleans,
/// arrays), errors naming the variable.
struct EnvPairs {
    dict: Dict,
}

impl EnvPairs {
    fn new<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> EnvPairs {
        let mut dict = Dict::new();
        for (name, value) in pairs {
            let Some(key) = env_key(name.as_ref()) else {
                continue;
            };
            let value: Value = match value.as_ref().parse() {
                Ok(value) => value,
                Err(never) => match never {},
            };
            dict.insert(key, value);
        }
        EnvPairs { dict }
    }
}

/// `MEERKAT_C2S_ADDR` -> `c2s_addr`; `None` for other variables and for `MEERKAT_CONFIG`, which
/// names the file rather than a key.
fn env_key(name: &str) -> Option<String> {
    let head = name.get(..ENV_PREFIX.len())?;
    if !head.eq_ignore_ascii_case(ENV_PREFIX) || name.eq_ignore_ascii_case(CONFIG_ENV) {
        return None;
    }
    let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    (!key.is_empty()).then_some(key)
}

impl Provider for EnvPairs {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_LAYER).interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("_").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn to_config_error(error: &figment::Error) -> ConfigError {
    let key = (!error.path.is_empty()).then(|| error.path.join("."));
    let origin = match &error.metadata {
        Some(md) if md.name == ENV_LAYER && !error.path.is_empty() => {
            md.interpolate(&Profile::Default, &error.path)
        }
        Some(md) => match &md.source {
            Some(Source::File(path)) => display_path(path),
            _ => md.name.to_string(),
        },
        None => "defaults".to_owned(),
    };
    ConfigError {
        key,
        origin,
        message: one_line(&error.kind.to_string()),
    }
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

/// Parser errors (TOML's especially) draw the offending line with `|` gutters over several lines;
/// keep the sentences and drop the drawing.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .collect();
    parts.join(": ")
}
