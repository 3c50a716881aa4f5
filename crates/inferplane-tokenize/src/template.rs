//! The chat template: a Hugging Face Jinja template rendered with `minijinja`, given what
//! `transformers`' `apply_chat_template` gives it (`messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, `raise_exception`) with `trim_blocks` and `lstrip_blocks`.
//! Python string methods that `minijinja` lacks (`.strip()`, `.startswith()`) make a
//! template fail to render; callers then fall back to the stand-in.

use crate::{LoadError, TokenizeError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The name the template is kept under.
const NAME: &str = "chat";

/// A compiled chat template with the special tokens it is given.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    source: PathBuf,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Special {
    Text(String),
    Added { content: String },
}

impl Special {
    fn text(self) -> String {
        match self {
            Special::Text(t) | Special::Added { content: t } => t,
        }
    }
}

/// `chat_template` in `tokenizer_config.json`: one template or named ones.
#[derive(Deserialize)]
#[serde(untagged)]
enum Templates {
    One(String),
    Named(Vec<Named>),
}

#[derive(Deserialize)]
struct Named {
    name: String,
    template: String,
}

/// The fields of `tokenizer_config.json` read here.
#[derive(Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<Templates>,
    #[serde(default)]
    bos_token: Option<Special>,
    #[serde(default)]
    eos_token: Option<Special>,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja text) with the given special tokens; `origin` names the
    /// file in errors.
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
        origin: &Path,
    ) -> Result<Self, LoadError> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        });
        env.add_template_owned(NAME, source)
            .map_err(|source| LoadError::Template {
                path: origin.to_path_buf(),
                source,
            })?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
            source: origin.to_path_buf(),
        })
    }

    /// Loads a template file: JSON (a `tokenizer_config.json`-like file with a
    /// `chat_template` field) when it ends in `.json`, else Jinja text (no special tokens
    /// unless a `tokenizer_config.json` beside it names them).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        if path.extension().is_some_and(|e| e == "json") {
            return Self::load_config(path)?.ok_or_else(|| LoadError::Template {
                path: path.to_path_buf(),
                source: minijinja::Error::new(
                    minijinja::ErrorKind::TemplateNotFound,
                    "no chat_template field",
                ),
            });
        }
        let text = read(path)?;
        let beside = path.with_file_name("tokenizer_config.json");
        let (bos, eos) = match beside.is_file() {
            true => {
                let cfg = parse_config(&beside)?;
                (
                    cfg.bos_token.map(Special::text).unwrap_or_default(),
                    cfg.eos_token.map(Special::text).unwrap_or_default(),
                )
            }
            false => (String::new(), String::new()),
        };
        Self::new(text, bos, eos, path)
    }

    /// Reads `tokenizer_config.json`: its chat template (the one named `default` when
    /// there are several), `None` when it has none.
    pub fn load_config(path: &Path) -> Result<Option<Self>, LoadError> {
        let cfg = parse_config(path)?;
        let source = match cfg.chat_template {
            None => return Ok(None),
            Some(Templates::One(t)) => t,
            Some(Templates::Named(ts)) => match ts.into_iter().find(|t| t.name == "default") {
                Some(t) => t.template,
                None => return Ok(None),
            },
        };
        let bos = cfg.bos_token.map(Special::text).unwrap_or_default();
        let eos = cfg.eos_token.map(Special::text).unwrap_or_default();
        Self::new(source, bos, eos, path).map(Some)
    }

    /// The file the template came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Renders the messages (a JSON array of `{role, content}` objects) with
    /// `add_generation_prompt = true`.
    pub fn render(&self, messages: &serde_json::Value) -> Result<String, TokenizeError> {
        let list = messages.as_array().ok_or(TokenizeError::Messages)?;
        let mut normalized = Vec::with_capacity(list.len());
        for m in list {
            let obj = m.as_object().ok_or(TokenizeError::Messages)?;
            let mut obj = obj.clone();
            if let Some(serde_json::Value::Array(parts)) = obj.get("content") {
                let text = parts
                    .iter()
                    .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                obj.insert("content".into(), serde_json::Value::String(text));
            }
            normalized.push(serde_json::Value::Object(obj));
        }
        let tmpl = self.env.get_template(NAME).map_err(TokenizeError::Render)?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from_serialize(&normalized),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(TokenizeError::Render)
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_config(path: &Path) -> Result<TokenizerConfig, LoadError> {
    serde_json::from_str(&read(path)?).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}
