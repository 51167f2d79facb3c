//! The model's own chat template, rendered with minijinja.
//!
//! GGUF files carry the Hugging Face Jinja template in
//! `tokenizer.chat_template`; rendering that, rather than a hand-written
//! format per family, is what makes any instruct GGUF prompt correctly.
//! The environment mirrors `transformers`: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods (`.strip()`, `.startswith()`)
//! through minijinja-contrib's pycompat, and `raise_exception` turning into a
//! refusal of the request. A file without a template gets ChatML, the format
//! of SmolLM2 and Qwen.

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, ErrorKind};

/// ChatML, for files that carry no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const NAME: &str = "chat";

/// One turn as templates expect it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compile `source` (ChatML when `None`); `bos` and `eos` are the texts
    /// of the model's special tokens, which templates may reference.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        let syntax =
            SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned(NAME, source.unwrap_or(CHATML).to_owned())
            .map_err(|e| format!("the template does not compile: {e}"))?;
        Ok(ChatTemplate { env, bos: bos.to_owned(), eos: eos.to_owned() })
    }

    /// The prompt for `turns`, ending with the opening of the assistant's turn.
    pub fn render(&self, turns: &[Turn]) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let messages: minijinja::Value = turns
            .iter()
            .map(|turn| {
                minijinja::Value::from_pairs([
                    ("role", minijinja::Value::from(turn.role)),
                    ("content", minijinja::Value::from(turn.content.as_str())),
                ])
            })
            .collect();
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("the template raised an exception").to_owned(),
                _ => e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, verbatim from its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn turn(role: &'static str, content: &str) -> Turn {
        Turn { role, content: content.to_owned() }
    }

    #[test]
    fn smollm2_renders_chatml_with_its_default_system_prompt() {
        let template = ChatTemplate::new(Some(SMOLLM2), "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            template.render(&[turn("user", "Hi")]).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            template
                .render(&[
                    turn("system", "Be brief."),
                    turn("user", "Hi"),
                    turn("assistant", "Hello."),
                    turn("user", "Bye")
                ])
                .unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn no_template_means_chatml() {
        let template = ChatTemplate::new(None, "", "").unwrap();
        assert_eq!(
            template.render(&[turn("system", "S"), turn("user", "U")]).unwrap(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn templates_use_bos_python_methods_and_block_trimming() {
        let source = "{{ bos_token }}\n  {% for m in messages %}\n[{{ m.role | upper }}] {{ m.content.strip() }}{{ eos_token }}\n  {% endfor %}";
        let template = ChatTemplate::new(Some(source), "<s>", "</s>").unwrap();
        assert_eq!(template.render(&[turn("user", "  hi  ")]).unwrap(), "<s>\n[USER] hi</s>\n");
    }

    #[test]
    fn raise_exception_and_syntax_errors_say_what_went_wrong() {
        let strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}ok";
        let template = ChatTemplate::new(Some(strict), "", "").unwrap();
        assert_eq!(template.render(&[turn("user", "x")]).unwrap(), "ok");
        assert_eq!(
            template.render(&[turn("assistant", "x")]).unwrap_err(),
            "Conversations must start with a user turn"
        );
        let broken = ChatTemplate::new(Some("{% for m in messages %}"), "", "").err().unwrap();
        assert!(broken.starts_with("the template does not compile"), "{broken}");
    }
}
