//! Slack incoming webhooks: a `text` fallback plus Block Kit blocks (header, section with
//! fields, buttons to the job and the provider's log).

use super::Message;
use serde_json::{json, Value};

pub fn payload(m: &Message) -> Value {
    let fields: Vec<Value> = m
        .facts
        .iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
        .collect();
    let mut buttons = vec![
        json!({"type": "button", "text": {"type": "plain_text", "text": "Open job"}, "url": m.job_url}),
    ];
    if let Some(log) = &m.log_url {
        buttons.push(json!({"type": "button", "text": {"type": "plain_text", "text": "Pipeline log"}, "url": log}));
    }
    json!({
        "text": m.text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": m.title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": m.text}, "fields": fields},
            {"type": "actions", "elements": buttons},
        ]
    })
}
