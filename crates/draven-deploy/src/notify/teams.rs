//! Microsoft Teams Workflows webhooks: a message whose attachment is an Adaptive Card
//! (`application/vnd.microsoft.card.adaptive`). The retired Office 365 connector
//! `MessageCard` format is not used: Teams no longer accepts it.

use super::Message;
use serde_json::{json, Value};

pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

pub fn payload(m: &Message) -> Value {
    let facts: Vec<Value> = m
        .facts
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    let mut actions =
        vec![json!({"type": "Action.OpenUrl", "title": "Open job", "url": m.job_url})];
    if let Some(log) = &m.log_url {
        actions.push(json!({"type": "Action.OpenUrl", "title": "Pipeline log", "url": log}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": ADAPTIVE_CARD,
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": m.text, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                ],
                "actions": actions,
            }
        }]
    })
}
