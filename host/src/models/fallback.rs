//! Fallback chains: try models in order until one answers.
//!
//! Each model has already retried as far as its own policy allows, so an
//! error that reaches [`Fallback`] is final for that model. The next model is
//! tried for every error *except* [`ModelError::Refused`]: a 4xx refusal is
//! about the request (too long, invalid, not allowed), and sending the same
//! request elsewhere would hide the problem rather than route around an
//! outage. When every model fails, the last model's error is returned; the
//! earlier ones are logged with `tracing` at warn level.

use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse};

/// A list of models tried in order.
pub struct Fallback {
    models: Vec<Box<dyn Model>>,
}

impl Fallback {
    /// A chain over `models`, first preferred. It must not be empty.
    pub fn new(models: Vec<Box<dyn Model>>) -> Result<Self, ModelError> {
        if models.is_empty() {
            return Err(ModelError::Config("a fallback chain needs at least one model".to_owned()));
        }
        Ok(Fallback { models })
    }

    /// Whether `error` lets the next model in a chain try.
    pub fn falls_through(error: &ModelError) -> bool {
        !matches!(error, ModelError::Refused { .. })
    }
}

impl Model for Fallback {
    fn describe(&self) -> String {
        let names: Vec<String> = self.models.iter().map(|m| m.describe()).collect();
        format!("fallback[{}]", names.join(", "))
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(async move {
            let (last, earlier) = self.models.split_last().expect("Fallback::new refuses an empty chain");
            for model in earlier {
                match model.complete(request).await {
                    Ok(response) => return Ok(response),
                    Err(error) if Self::falls_through(&error) => {
                        tracing::warn!(model = %model.describe(), %error, "model failed; trying the next fallback");
                    }
                    Err(error) => return Err(error),
                }
            }
            last.complete(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::models::http::loopback::{fast, refused_base, Server, Step};
    use crate::models::openai::{OpenAi, OpenAiConfig};

    const PLAIN: &str = r#"{"choices":[{"message":{"content":"from the backup"}}]}"#;

    fn openai_at(base: &str, name: &str) -> Box<dyn Model> {
        let mut config = OpenAiConfig::new(name, format!("{base}/v1"));
        config.http = fast(2);
        Box::new(OpenAi::with_api_key(config, None).unwrap())
    }

    fn hello() -> ModelRequest {
        ModelRequest { messages: vec![Message::user("hi")], ..Default::default() }
    }

    #[tokio::test]
    async fn falls_back_when_the_first_model_is_down() {
        let down = refused_base().await;
        let failing = Server::start(vec![Step::json(503, "busy")]).await;
        let backup = Server::start(vec![Step::json(200, PLAIN)]).await;
        let chain = Fallback::new(vec![
            openai_at(&down, "primary"),
            openai_at(&failing.base, "secondary"),
            openai_at(&backup.base, "backup"),
        ])
        .unwrap();
        let response = chain.complete(&hello()).await.unwrap();
        assert_eq!(response.text, "from the backup");
        assert_eq!(failing.count(), 2, "the secondary used its own retries first");
        assert_eq!(backup.count(), 1);
        let described = chain.describe();
        assert!(
            described.starts_with("fallback[openai:primary@") && described.contains("openai:backup@"),
            "{described}"
        );
    }

    #[tokio::test]
    async fn a_refusal_stops_the_chain() {
        let refusing = Server::start(vec![Step::json(400, r#"{"error":{"message":"context too long"}}"#)]).await;
        let backup = Server::start(vec![Step::json(200, PLAIN)]).await;
        let chain = Fallback::new(vec![openai_at(&refusing.base, "a"), openai_at(&backup.base, "b")]).unwrap();
        let err = chain.complete(&hello()).await.unwrap_err();
        assert!(matches!(&err, ModelError::Refused { body, .. } if body.contains("context too long")), "{err:?}");
        assert_eq!(backup.count(), 0);
    }

    #[tokio::test]
    async fn when_all_fail_the_last_error_is_returned() {
        let down = refused_base().await;
        let failing = Server::start(vec![Step::json(500, "boom")]).await;
        let chain = Fallback::new(vec![openai_at(&down, "a"), openai_at(&failing.base, "b")]).unwrap();
        let err = chain.complete(&hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Unavailable { status: 500, attempts: 2, .. }), "{err:?}");
    }

    #[test]
    fn an_empty_chain_is_a_config_error() {
        assert!(matches!(Fallback::new(Vec::new()), Err(ModelError::Config(_))));
    }
}
