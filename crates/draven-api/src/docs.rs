//! The browsable API page at `/api/docs`, rendered once at start from the OpenAPI document.
//!
//! Server-rendered with no scripts or remote assets, so it works on an air-gapped install.

use serde_json::Value;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn schema_name(v: &Value) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    match v.get("type").and_then(Value::as_str) {
        Some("array") => format!("[{}]", v.get("items").map(schema_name).unwrap_or_default()),
        Some(t) => t.to_owned(),
        None => "object".into(),
    }
}

pub fn render(doc: &utoipa::openapi::OpenApi) -> String {
    let json = serde_json::to_value(doc).unwrap_or(Value::Null);
    let mut ops: Vec<(String, String, String, &Value)> = Vec::new();
    if let Some(paths) = json.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let tag = op
                    .get("tags")
                    .and_then(|t| t.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or("other")
                    .to_owned();
                ops.push((tag, path.clone(), method.to_uppercase(), op));
            }
        }
    }
    ops.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let title = json
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("API");
    let version = json
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    let description = json
        .pointer("/info/description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} API {v}</title><style>
body{{font-family:system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem;color:#1a1a1a;line-height:1.45}}
h2{{border-bottom:1px solid #ccc;padding-bottom:.25rem;margin-top:2rem}}
details{{border:1px solid #ddd;border-radius:6px;margin:.4rem 0;padding:.4rem .6rem}}
summary{{cursor:pointer}} code{{background:#f3f3f3;padding:0 .25rem;border-radius:3px}}
.m{{display:inline-block;min-width:4.2rem;font-weight:700;font-family:monospace}}
.GET{{color:#0a5d00}}.POST{{color:#8a4b00}}.PUT{{color:#00468b}}.PATCH{{color:#5a2d82}}.DELETE{{color:#a00000}}
.rule{{float:right;font-family:monospace;font-size:.85rem;color:#444}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}}
</style></head><body><h1>{t} API <small>{v}</small></h1><p>{d}</p>
<p>Machine-readable: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a> (OpenAPI 3.1). Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p>"#,
        t = esc(title),
        v = esc(version),
        d = esc(description)
    );
    let mut current_tag = String::new();
    for (tag, path, method, op) in ops {
        if tag != current_tag {
            let _ = write!(h, "<h2 id=\"{0}\">{0}</h2>", esc(&tag));
            current_tag = tag;
        }
        let summary = op.get("summary").and_then(Value::as_str).unwrap_or("");
        let desc = op.get("description").and_then(Value::as_str).unwrap_or("");
        let rule = match op.get("security").and_then(Value::as_array) {
            Some(reqs)
                if reqs
                    .iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty())) =>
            {
                "public".to_owned()
            }
            Some(reqs) => reqs
                .iter()
                .filter_map(|r| {
                    r.get(crate::authz::SCHEME)?
                        .get(0)?
                        .as_str()
                        .map(str::to_owned)
                })
                .next()
                .unwrap_or_default(),
            None => "undeclared (refused)".into(),
        };
        let _ = write!(
            h,
            "<details><summary><span class=\"m {m}\">{m}</span> <code>{p}</code> {s}<span class=\"rule\">{r}</span></summary>",
            m = method,
            p = esc(&path),
            s = esc(summary),
            r = esc(&rule)
        );
        if !desc.is_empty() && desc != summary {
            let _ = write!(h, "<p>{}</p>", esc(desc));
        }
        if let Some(params) = op.get("parameters").and_then(Value::as_array) {
            h.push_str(
                "<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>",
            );
            for p in params {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(p.get("name").and_then(Value::as_str).unwrap_or("")),
                    if p.get("required").and_then(Value::as_bool).unwrap_or(false) {
                        " *"
                    } else {
                        ""
                    },
                    esc(p.get("in").and_then(Value::as_str).unwrap_or("")),
                    esc(&p.get("schema").map(schema_name).unwrap_or_default()),
                    esc(p.get("description").and_then(Value::as_str).unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
            let _ = write!(h, "<p>Body: <code>{}</code></p>", esc(&schema_name(body)));
        }
        if let Some(resps) = op.get("responses").and_then(Value::as_object) {
            h.push_str("<p>Responses: ");
            for (code, r) in resps {
                let schema = r
                    .get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| c.values().next())
                    .and_then(|c| c.get("schema"))
                    .map(schema_name)
                    .unwrap_or_default();
                let _ = write!(h, "<code>{}</code> {} ", esc(code), esc(&schema));
            }
            h.push_str("</p>");
        }
        h.push_str("</details>");
    }
    if let Some(schemas) = json
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        h.push_str("<h2 id=\"schemas\">schemas</h2>");
        for (name, s) in schemas {
            let _ = write!(
                h,
                "<details id=\"schema-{0}\"><summary><code>{0}</code></summary><table>",
                esc(name)
            );
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (field, fs) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(field),
                    if required.contains(&field.as_str()) {
                        " *"
                    } else {
                        ""
                    },
                    esc(&schema_name(fs)),
                    esc(fs.get("description").and_then(Value::as_str).unwrap_or(""))
                );
            }
            h.push_str("</table></details>");
        }
    }
    h.push_str("</body></html>");
    h
}
