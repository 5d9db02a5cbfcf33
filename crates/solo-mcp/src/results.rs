//! Answers and refusals as tool results: an answer is its JSON (as text, and as
//! structured content when it is an object); a refusal is a result with `isError` whose
//! text names the reason, the class and the message, then the crash report or the retry
//! hint when there is one, and whose structured content is the refusal's JSON.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use solo_types::api::Failure;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A successful tool result (compact JSON: an answer is read by a model, not a person).
pub(crate) fn answer(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    if v.is_object() {
        r.structured_content = Some(v);
    }
    r
}

/// A refusal an agent can act on.
pub(crate) fn refusal(f: &Failure) -> CallToolResult {
    let mut text = format!("refused: {} ({}): {}", f.reason, f.code, f.message);
    if let Some(d) = &f.details {
        text.push_str("\ncrash report: ");
        text.push_str(&pretty(d));
    }
    if let Some(s) = f.retry_after {
        text.push_str(&format!("\nretry after {s} s"));
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = serde_json::to_value(f).ok();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_reason_and_carries_the_crash_report() {
        let mut f = Failure::new(
            solo_types::Code::Unavailable,
            "service_crashed",
            "it trapped",
        );
        f.details = Some(serde_json::json!({"kind": "trap", "log_tail": ["[info] hi"]}));
        let r = refusal(&f);
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_value(&r.content).unwrap().to_string();
        assert!(
            text.contains("service_crashed") && text.contains("log_tail"),
            "{text}"
        );
        assert_eq!(r.structured_content.unwrap()["error"], "service_crashed");
        let ok = answer(serde_json::json!({"value": 1}));
        assert_eq!(ok.is_error, Some(false));
        assert!(answer(Value::from(3)).structured_content.is_none());
    }
}
