use std::fmt;

/// What a scanner saw, never what to do about it: policy maps findings to scores and actions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// A stable upper-case name, e.g. `BANNED_EXT`, `MIME_AMBIGUOUS`, `RULE_REJECT`.
    pub name: String,
    /// Human detail for logs and `strainer scan` (never copied into headers).
    pub detail: String,
    /// The part path it concerns, when it concerns one (`2`, `2/1`, `3!a/b.exe`).
    pub part: Option<String>,
    /// A score contribution the scanner itself attaches (rule `SCORE n`), if any.
    pub score: Option<f64>,
}

impl Finding {
    /// A finding without part or score.
    pub fn new(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding { name: name.into(), detail: detail.into(), part: None, score: None }
    }

    /// The same finding, about `part`.
    pub fn at(mut self, part: impl Into<String>) -> Self {
        self.part = Some(part.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(p) = &self.part {
            write!(f, " [part {p}]")?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        if let Some(s) = self.score {
            write!(f, " (score {s:.2})")?;
        }
        Ok(())
    }
}
