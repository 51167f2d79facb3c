//! An opt-in, on-disk response cache.
//!
//! A cached reply is keyed by the blake3 hash of the backend's fingerprint
//! (its description plus whatever configuration shapes its answers) and the
//! exact serialized [`ModelRequest`]. Any change to the conversation, the
//! tools, the sampling parameters, the seed, the model or the endpoint is a
//! different key. A hit costs no HTTP call; errors are never cached.
//!
//! Entries are JSON files named by the key in a two-level fan-out
//! (`ab/cdef….json`) under a directory the caller chooses. They are written
//! through a temporary file in the same directory and renamed into place, so
//! a reader never sees half an entry and concurrent writers of the same key
//! are harmless (they write the same kind of content). An entry that cannot
//! be read or parsed is a miss, and is overwritten by the next answer.
//! Failing to *write* an entry is logged, not returned: the answer is still
//! good, only the cache missed out.
//!
//! The cache trusts that equal requests deserve equal answers: use it for
//! replays, tests and demos, not where fresh samples are the point.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse};

/// A directory of cached model responses.
#[derive(Clone, Debug)]
pub struct ResponseCache {
    dir: PathBuf,
}

impl ResponseCache {
    /// Open (creating if needed) the cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            ModelError::Config(format!("cannot create the response cache directory {}: {e}", dir.display()))
        })?;
        Ok(ResponseCache { dir })
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `request` sent to a backend with `fingerprint`.
    pub fn key(fingerprint: &str, request: &ModelRequest) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(fingerprint.as_bytes());
        hasher.update(&[0]);
        // A ModelRequest always serializes (strings, numbers and JSON values).
        let bytes = serde_json::to_vec(request).expect("a ModelRequest serializes to JSON");
        hasher.update(&bytes);
        hasher.finalize()
    }

    /// Where the entry for `key` lives.
    pub fn path_of(&self, key: &blake3::Hash) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(format!("{}.json", &hex[2..]))
    }

    /// The cached response for `key`, if there is a readable one.
    pub fn get(&self, key: &blake3::Hash) -> Option<ModelResponse> {
        let path = self.path_of(key);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(response) => Some(response),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable response cache entry");
                None
            }
        }
    }

    /// Store `response` under `key`, atomically.
    pub fn put(&self, key: &blake3::Hash, response: &ModelResponse) -> std::io::Result<PathBuf> {
        let path = self.path_of(key);
        let parent = path.parent().expect("entries live in a fan-out directory");
        std::fs::create_dir_all(parent)?;
        let mut file = tempfile::NamedTempFile::new_in(parent)?;
        serde_json::to_writer(&mut file, response)?;
        file.flush()?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

/// A model whose answers are cached on disk.
pub struct Cached {
    inner: Box<dyn Model>,
    cache: ResponseCache,
    fingerprint: String,
}

impl Cached {
    /// Cache `inner`'s answers, keyed by its [`Model::describe`] and the
    /// request.
    pub fn new(inner: Box<dyn Model>, cache: ResponseCache) -> Self {
        let fingerprint = inner.describe();
        Cached { inner, cache, fingerprint }
    }

    /// Cache `inner`'s answers with an explicit fingerprint: use one that
    /// covers every setting that changes answers but is not in the request
    /// (default sampling parameters, for example).
    pub fn with_fingerprint(inner: Box<dyn Model>, cache: ResponseCache, fingerprint: impl Into<String>) -> Self {
        Cached { inner, cache, fingerprint: fingerprint.into() }
    }
}

impl Model for Cached {
    fn describe(&self) -> String {
        format!("{} (cached in {})", self.inner.describe(), self.cache.dir().display())
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(async move {
            let key = ResponseCache::key(&self.fingerprint, request);
            if let Some(hit) = self.cache.get(&key) {
                return Ok(hit);
            }
            let response = self.inner.complete(request).await?;
            if let Err(e) = self.cache.put(&key, &response) {
                tracing::warn!(dir = %self.cache.dir().display(), error = %e, "cannot write a response cache entry");
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::models::http::loopback::{fast, Server, Step};
    use crate::models::openai::{OpenAi, OpenAiConfig};

    const PLAIN: &str =
        r#"{"choices":[{"message":{"content":"cached answer"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;

    fn openai_at(base: &str) -> Box<dyn Model> {
        let mut config = OpenAiConfig::new("m", format!("{base}/v1"));
        config.http = fast(1);
        Box::new(OpenAi::with_api_key(config, None).unwrap())
    }

    #[tokio::test]
    async fn a_hit_makes_no_second_http_call() {
        let server = Server::start(vec![Step::json(200, PLAIN)]).await;
        let dir = tempfile::tempdir().unwrap();
        let model = Cached::new(openai_at(&server.base), ResponseCache::open(dir.path().join("cache")).unwrap());
        let request = ModelRequest { messages: vec![Message::user("hi")], ..Default::default() };

        let first = model.complete(&request).await.unwrap();
        let second = model.complete(&request).await.unwrap();
        assert_eq!(first.text, "cached answer");
        assert_eq!(first, second);
        assert_eq!(server.count(), 1, "the second call is served from disk");

        let other = ModelRequest { seed: 1, ..request.clone() };
        model.complete(&other).await.unwrap();
        assert_eq!(server.count(), 2, "a different seed is a different key");

        // A fresh wrapper over the same directory still hits.
        let again = Cached::new(openai_at(&server.base), ResponseCache::open(dir.path().join("cache")).unwrap());
        assert_eq!(again.complete(&request).await.unwrap(), first);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_corrupt_entries_are_misses() {
        let server =
            Server::start(vec![Step::json(400, r#"{"error":{"message":"no"}}"#), Step::json(200, PLAIN)]).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(dir.path()).unwrap();
        let model = Cached::new(openai_at(&server.base), cache.clone());
        let request = ModelRequest { messages: vec![Message::user("hi")], ..Default::default() };
        assert!(model.complete(&request).await.is_err());
        assert_eq!(model.complete(&request).await.unwrap().text, "cached answer");
        assert_eq!(server.count(), 2);

        let key = ResponseCache::key(&openai_at(&server.base).describe(), &request);
        std::fs::write(cache.path_of(&key), b"{not json").unwrap();
        assert_eq!(cache.get(&key), None);
        assert_eq!(model.complete(&request).await.unwrap().text, "cached answer");
        assert_eq!(server.count(), 3, "a corrupt entry is a miss");
        assert!(cache.get(&key).is_some(), "and is overwritten");
    }

    #[test]
    fn keys_depend_on_fingerprint_and_request_and_fan_out() {
        let request = ModelRequest { messages: vec![Message::user("hi")], ..Default::default() };
        let a = ResponseCache::key("openai:a@http://x", &request);
        assert_eq!(a, ResponseCache::key("openai:a@http://x", &request));
        assert_ne!(a, ResponseCache::key("openai:b@http://x", &request));
        assert_ne!(
            a,
            ResponseCache::key("openai:a@http://x", &ModelRequest { temperature: Some(0.1), ..request.clone() })
        );
        let cache = ResponseCache { dir: PathBuf::from("/c") };
        let hex = a.to_hex();
        assert_eq!(cache.path_of(&a), PathBuf::from(format!("/c/{}/{}.json", &hex[..2], &hex[2..])));
    }

    #[test]
    fn an_uncreatable_directory_is_a_config_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = ResponseCache::open(file.path().join("sub")).unwrap_err();
        assert!(matches!(&err, ModelError::Config(m) if m.contains("response cache directory")), "{err}");
    }
}
