//! The in-memory host behaves like the real one: contracts, edit errors,
//! slots, advice, logs, capabilities and the default `Processor` methods.

use kiln_guest::testing::TestHost;
use kiln_guest::{
    advise, capabilities, slots, task, Call, CapError, Conversation, EditError, Hook, Info, Level,
    Message, Processor, Response, Role, ToolCall, ToolResult, ToolSpec, Toolset, Verdict,
};

/// A processor whose behaviour each test sets through a closure per hook.
#[derive(Default)]
struct Scripted {
    seen: Vec<Hook>,
    step_start: Option<fn(&Conversation<'_>) -> Verdict>,
    before_model: Option<fn(&Conversation<'_>) -> Verdict>,
    task_start: Option<fn(&Conversation<'_>, &Toolset<'_>) -> Verdict>,
    after_model: Option<fn(&Response<'_>) -> Verdict>,
    before_tool: Option<fn(&ToolCall<'_>) -> Verdict>,
    after_tool: Option<fn(&ToolResult<'_>) -> Verdict>,
    step_end: Option<fn(&Conversation<'_>) -> Verdict>,
}

impl Processor for Scripted {
    fn describe() -> Info {
        Info::new("scripted", "0.0.1").hooks(Hook::ALL)
    }
    fn on_task_start(&mut self, conv: &Conversation<'_>, tools: &Toolset<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.task_start.map_or(Verdict::Pass, |f| f(conv, tools))
    }
    fn on_step_start(&mut self, conv: &Conversation<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.step_start.map_or(Verdict::Pass, |f| f(conv))
    }
    fn on_before_model(&mut self, conv: &Conversation<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.before_model.map_or(Verdict::Pass, |f| f(conv))
    }
    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.after_model.map_or(Verdict::Pass, |f| f(response))
    }
    fn on_before_tool(&mut self, _conv: &Conversation<'_>, call: &ToolCall<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.before_tool.map_or(Verdict::Pass, |f| f(call))
    }
    fn on_after_tool(
        &mut self,
        _conv: &Conversation<'_>,
        _call: &ToolCall<'_>,
        result: &ToolResult<'_>,
    ) -> Verdict {
        self.seen.push(task().hook);
        self.after_tool.map_or(Verdict::Pass, |f| f(result))
    }
    fn on_step_end(&mut self, conv: &Conversation<'_>) -> Verdict {
        self.seen.push(task().hook);
        self.step_end.map_or(Verdict::Pass, |f| f(conv))
    }
}

fn three_messages() -> TestHost {
    let mut host = TestHost::new();
    host.user("Goal: a")
        .assistant_calls("", vec![Call::new("c1", "search", "{}")])
        .tool("c1", "result");
    host
}

#[test]
fn task_reports_the_hook_being_called() {
    let mut host = three_messages();
    let mut p = Scripted::default();
    host.task_start(&mut p);
    host.step_start(&mut p);
    host.before_model(&mut p);
    host.after_model(&mut p, "", vec![]);
    host.before_tool(&mut p, Call::new("c2", "search", "{}"));
    host.after_tool(&mut p, Call::new("c2", "search", "{}"), "ok", false);
    host.step_end(&mut p);
    assert_eq!(&p.seen, &Hook::ALL[..7]);
}

#[test]
fn reads_follow_the_conversation() {
    let mut host = three_messages();
    let mut p = Scripted {
        before_model: Some(|conv| {
            assert_eq!(conv.len(), 3);
            assert_eq!(conv.role_of(1), Some(Role::Assistant));
            assert_eq!(conv.role_of(3), None);
            assert_eq!(conv.last_of(Role::User), Some(0));
            assert_eq!(conv.last_of(Role::System), None);
            assert_eq!(conv.get(2).unwrap().call_id.as_deref(), Some("c1"));
            assert_eq!(conv.last().unwrap().content, "result");
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    assert_eq!(host.before_model(&mut p), Verdict::Pass);
}

#[test]
fn step_start_edits_apply_and_report_bad_indexes() {
    let mut host = three_messages();
    let mut p = Scripted {
        step_start: Some(|conv| {
            assert_eq!(conv.remove(9), Err(EditError::OutOfRange(9)));
            assert_eq!(
                conv.insert(4, &Message::user("x")),
                Err(EditError::OutOfRange(4))
            );
            assert!(matches!(
                conv.insert(
                    0,
                    &Message {
                        role: Role::System,
                        ..Message::user("x")
                    }
                ),
                Err(EditError::Invalid(_))
            ));
            conv.replace(1, &Message::user("[summary]")).unwrap();
            conv.remove(2).unwrap();
            conv.insert(2, &Message::user("appended")).unwrap();
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.step_start(&mut p);
    let contents: Vec<String> = host.messages().into_iter().map(|m| m.content).collect();
    assert_eq!(contents, ["Goal: a", "[summary]", "appended"]);
}

#[test]
#[should_panic(
    expected = "contract violation: `Conversation::remove` may only be called at step-start, not at before-model"
)]
fn an_edit_outside_its_hook_panics_like_a_trap() {
    let mut host = three_messages();
    let mut p = Scripted {
        before_model: Some(|conv| {
            let _ = conv.remove(0);
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.before_model(&mut p);
}

#[test]
#[should_panic(
    expected = "`Conversation::set_system_prompt` may only be called at task-start, not at step-end"
)]
fn step_end_is_read_only() {
    let mut host = three_messages();
    let mut p = Scripted {
        step_end: Some(|conv| {
            conv.set_system_prompt("new");
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.step_end(&mut p);
}

#[test]
fn before_model_appends_once_and_edits_only_a_last_user_message() {
    let mut host = three_messages();
    let mut p = Scripted {
        before_model: Some(|conv| {
            assert!(
                matches!(conv.set_last_user("x"), Err(EditError::Invalid(why)) if why.contains("tool message"))
            );
            conv.append_user("first").unwrap();
            assert!(conv.append_user("second").is_err());
            conv.set_last_user("first, edited").unwrap();
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.before_model(&mut p);
    assert_eq!(host.messages().last().unwrap().content, "first, edited");
    // The once-per-call limit resets on the next call.
    let mut again = Scripted {
        before_model: Some(|conv| {
            conv.append_user("next call").unwrap();
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.before_model(&mut again);
    assert_eq!(host.messages().len(), 5);
}

#[test]
fn task_start_edits_the_prompt_and_hides_tools() {
    let mut host = TestHost::new();
    host.system_prompt("old").set_tools(vec![
        ToolSpec::new("search", "find", "{}"),
        ToolSpec::new("buy", "purchase", "{}"),
    ]);
    let mut p = Scripted {
        task_start: Some(|conv, tools| {
            assert_eq!(conv.system_prompt(), "old");
            conv.set_system_prompt("new");
            assert_eq!(tools.names(), ["search", "buy"]);
            tools.hide("buy").unwrap();
            assert!(tools.hide("nope").is_err());
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.task_start(&mut p);
    assert_eq!(host.current_system_prompt(), "new");
    assert_eq!(host.tools().len(), 1);
    assert_eq!(host.hidden_tools(), ["buy"]);
}

#[test]
fn response_tool_call_and_result_edits_come_back() {
    let mut host = three_messages();
    let mut p = Scripted {
        after_model: Some(|response| {
            let mut calls = response.calls();
            calls[0].arguments = "{\"q\":1}".into();
            response.set_calls(&calls);
            response.set_text("rewritten");
            Verdict::Pass
        }),
        before_tool: Some(|call| {
            assert_eq!(call.get().name, "search");
            call.set_arguments("{}");
            call.respond("cached");
            Verdict::Pass
        }),
        after_tool: Some(|result| {
            assert!(result.is_error());
            result.set_content(&result.content().to_uppercase());
            Verdict::block("no")
        }),
        ..Scripted::default()
    };
    let after = host.after_model(&mut p, "text", vec![Call::new("c", "search", "{bad")]);
    assert_eq!(after.text, "rewritten");
    assert_eq!(after.calls[0].arguments, "{\"q\":1}");
    let before = host.before_tool(&mut p, Call::new("c", "search", "{\"q\":1}"));
    assert_eq!(before.call.arguments, "{}");
    assert_eq!(before.response.as_deref(), Some("cached"));
    let after = host.after_tool(&mut p, Call::new("c", "search", "{}"), "oops", true);
    assert_eq!(after.content, "OOPS");
    assert_eq!(after.verdict, Verdict::Block("no".into()));
}

#[test]
fn slots_advice_and_logs_are_visible_to_the_test() {
    let mut host = three_messages();
    host.set_slot("shared/x", "1");
    let mut p = Scripted {
        step_end: Some(|_| {
            assert_eq!(slots::get("shared/x").as_deref(), Some("1"));
            slots::set("mine/y", "2");
            slots::remove("shared/x");
            advise("first");
            advise("second wins");
            kiln_guest::info!("step {}", task().step);
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.set_step(4);
    host.step_end(&mut p);
    assert_eq!(host.slot("shared/x"), None);
    assert_eq!(host.slot("mine/y").as_deref(), Some("2"));
    assert_eq!(host.advice().as_deref(), Some("second wins"));
    assert_eq!(host.logs(), [(Level::Info, "step 4".to_owned())]);
    // Advice belongs to one call.
    host.before_model(&mut Scripted::default());
    assert_eq!(host.advice(), None);
}

#[test]
fn capabilities_are_denied_unless_granted() {
    let mut host = TestHost::new();
    let mut p = Scripted {
        step_end: Some(|_| {
            assert!(matches!(
                capabilities::read_file("/etc/passwd"),
                Err(CapError::Denied(_))
            ));
            assert_eq!(capabilities::read_file("/data/a.txt").unwrap(), b"hello");
            assert!(matches!(
                capabilities::http_get("http://127.0.0.1:1/"),
                Err(CapError::Denied(_))
            ));
            assert_eq!(
                capabilities::http_get("http://example.test/").unwrap(),
                "body"
            );
            Verdict::Pass
        }),
        ..Scripted::default()
    };
    host.grant_file("/data/a.txt", b"hello")
        .grant_url("http://example.test/", "body");
    host.step_end(&mut p);
}

#[test]
fn default_methods_accept_json_and_refuse_the_rest() {
    let host = TestHost::new();
    let mut p = Scripted::default();
    assert_eq!(host.configure(&mut p, ""), Ok(()));
    assert_eq!(host.configure(&mut p, "{\"any\": [1, 2]}"), Ok(()));
    let error = host.configure(&mut p, "{oops").unwrap_err();
    assert!(
        error.starts_with("config for `scripted` is not valid JSON"),
        "{error}"
    );
    assert!(host.save_state(&p).is_empty());
    assert_eq!(host.load_state(&mut p, b"anything"), Ok(()));
    assert!(host.list_tools(&p).is_empty());
    let error = host.call_tool(&mut p, "x", "{}").unwrap_err();
    assert_eq!(error, "processor `scripted` provides no tool named `x`");
}

#[test]
fn hooks_parse_from_their_wit_names() {
    for hook in Hook::ALL {
        assert_eq!(hook.name().parse::<Hook>(), Ok(hook));
    }
    let error = "before_model".parse::<Hook>().unwrap_err();
    assert!(error.contains("unknown hook `before_model`") && error.contains("before-model"));
}
