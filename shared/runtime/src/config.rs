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

use crate::common::{Common, Database};

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
    // Variables that are not Unicode cannot be config values; skip them rather than panic.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_layers(&args, &env)
}

/// [`load`] with the process's arguments (without the program name) and environment passed in.
fn load_layers<T: DeserializeOwned + Serialize + Default>(
    args: &[OsString],
    env: &[(String, String)],
) -> Result<T, ConfigError> {
    let file = match config_path_from_args(args)? {
        Some(path) => Some(path),
        None => env
            .iter()
            .find(|(k, v)| k == CONFIG_ENV && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v)),
    };
    let figment = base::<T>();
    let figment = match &file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError {
                    key: None,
                    origin: display_path(path),
                    message: "config file not found".to_owned(),
                });
            }
            figment.merge(Toml::file_exact(path))
        }
        None => figment,
    };
    extract_with_env(figment, EnvPairs::new(env))
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
    extract_with_env(figment, EnvPairs::new(env))
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

/// Extracts `lower` overlaid by `env`. An env value that parses as a number or boolean but whose
/// key wants a string (`MEERKAT_DC=2`, a numeric password) is retried as text; if the text is
/// rejected too, the first, more telling error is reported.
fn extract_with_env<T: DeserializeOwned>(
    lower: Figment,
    mut env: EnvPairs,
) -> Result<T, ConfigError> {
    let mut retried: Option<(String, figment::Error)> = None;
    loop {
        let error = match extract_naming_the_key(&lower.clone().merge(env.clone())) {
            Ok(config) => return Ok(config),
            Err(error) => *error,
        };
        let env_key = match (&error.metadata, error.path.as_slice()) {
            (Some(md), [key]) if md.name == ENV_LAYER => Some(key.clone()),
            _ => None,
        };
        match (env_key, retried.take()) {
            (Some(key), Some((previous, original))) if key == previous => {
                return Err(to_config_error(&original))
            }
            (Some(key), _) if env.keep_as_text(&key) => retried = Some((key, error)),
            _ => return Err(to_config_error(&error)),
        }
    }
}

/// Extracts `T`. A bad value inside a `#[serde(flatten)]`ed struct comes out of serde without
/// its key; the structs every service flattens ([`Common`], [`Database`]) are extracted alone
/// then, to name the key and where the value came from.
fn extract_naming_the_key<T: DeserializeOwned>(
    figment: &Figment,
) -> Result<T, Box<figment::Error>> {
    let error = match figment.extract::<T>() {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    if !error.path.is_empty() {
        return Err(Box::new(error));
    }
    let named = [
        figment.extract::<Common>().err(),
        figment.extract::<Database>().err(),
    ]
    .into_iter()
    .flatten()
    .find(|e| !e.path.is_empty());
    Err(Box::new(named.unwrap_or(error)))
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
#[derive(Clone)]
struct EnvPairs {
    dict: Dict,
    /// The values as given, for keys whose parsed value the target type rejects.
    raw: Map<String, String>,
}

impl EnvPairs {
    fn new<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> EnvPairs {
        let mut dict = Dict::new();
        let mut raw = Map::new();
        for (name, value) in pairs {
            let Some(key) = env_key(name.as_ref()) else {
                continue;
            };
            let parsed: Value = match value.as_ref().parse() {
                Ok(parsed) => parsed,
                Err(never) => match never {},
            };
            dict.insert(key.clone(), parsed);
            raw.insert(key, value.as_ref().to_owned());
        }
        EnvPairs { dict, raw }
    }

    /// Replaces the parsed value of `key` by its text; false if there is nothing to replace.
    fn keep_as_text(&mut self, key: &str) -> bool {
        let Some(text) = self.raw.get(key) else {
            return false;
        };
        if matches!(self.dict.get(key), Some(Value::String(..)) | None) {
            return false;
        }
        self.dict.insert(key.to_owned(), Value::from(text.clone()));
        true
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

/// A config whose values do not fit together (what the types cannot check).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

pub fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Conf {
        port: u16,
        name: String,
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meerkat-runtime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_flag_forms() {
        assert_eq!(config_path_from_args(&args(&["-v"])).unwrap(), None);
        assert_eq!(
            config_path_from_args(&args(&["--config", "a.toml"])).unwrap(),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path_from_args(&args(&["--config=a.toml", "--config", "b.toml"])).unwrap(),
            Some(PathBuf::from("b.toml"))
        );
        let error = config_path_from_args(&args(&["--config"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: --config needs a path (from command line)"
        );
    }

    #[test]
    fn env_keys_are_flat_and_lowercase() {
        assert_eq!(env_key("MEERKAT_C2S_ADDR").as_deref(), Some("c2s_addr"));
        assert_eq!(env_key("meerkat_port").as_deref(), Some("port"));
        assert_eq!(env_key("MEERKAT_CONFIG"), None);
        assert_eq!(env_key("MEERKAT_"), None);
        assert_eq!(env_key("PATH"), None);
        assert_eq!(env_key("MEERKA"), None);
    }

    #[test]
    fn file_from_flag_then_env_overrides() {
        let path = temp_file("flag.toml", "port = 5222\nname = \"file\"\n");
        let flag = format!("--config={}", path.display());
        let conf: Conf = load_layers(&args(&[&flag]), &env(&[("MEERKAT_NAME", "env")])).unwrap();
        assert_eq!(
            conf,
            Conf {
                port: 5222,
                name: "env".into()
            }
        );
    }

    #[test]
    fn file_from_meerkat_config_env() {
        let path = temp_file("env.toml", "port = 5269\n");
        let path = path.to_string_lossy().into_owned();
        let conf: Conf = load_layers(&[], &env(&[("MEERKAT_CONFIG", &path)])).unwrap();
        assert_eq!(conf.port, 5269);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let error = load_layers::<Conf>(&args(&["--config", "/nonexistent/meerkat.toml"]), &[])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: config file not found (from /nonexistent/meerkat.toml)"
        );
    }

    #[test]
    fn bad_file_value_names_the_file() {
        let path = temp_file("bad.toml", "port = \"high\"\n");
        let flag = format!("--config={}", path.display());
        let error = load_layers::<Conf>(&args(&[&flag]), &[]).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("port"));
        assert_eq!(error.origin, path.display().to_string());
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn toml_syntax_error_is_one_line() {
        let path = temp_file("syntax.toml", "port = \n");
        let flag = format!("--config={}", path.display());
        let error = load_layers::<Conf>(&args(&[&flag]), &[]).unwrap_err();
        let line = error.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(&path.display().to_string()), "{line}");
    }
}
