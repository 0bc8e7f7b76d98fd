//! Tasks: how one row of a dataset becomes a text-level example.
//!
//! A classification task is a template with named fields (`{sentence}`), an answer
//! slot `{answer}` at its end, and candidate answer words. Rendering a row gives the
//! prompt (the text before the slot), the candidate continuations (each with the
//! space the template puts before the slot, since byte-level BPE attaches a space to
//! the following word) and the gold candidate. The built-in tasks are the paper's
//! prompts (Xu & Zhang 2024, after MeZO); `lm` is plain text scored token by token.

use crate::data::table::LabelValue;
use crate::error::{Error, Result};

/// The placeholder that marks where a candidate answer goes.
pub const ANSWER_SLOT: &str = "answer";

/// The names accepted by [`Task::new`].
pub const TASK_NAMES: [&str; 6] = ["sst2", "rte", "cb", "boolq", "lm", "classification"];

/// One input column of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The name the template uses (`{premise}`) and that `--column ROLE=NAME` overrides.
    pub role: String,
    /// Column names tried in order when the user names none.
    pub default_columns: Vec<String>,
    style: FieldStyle,
}

/// How a field's value is cleaned before it enters the prompt. Every style trims
/// surrounding whitespace (GLUE's SST-2 sentences end with a space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldStyle {
    Verbatim,
    /// BoolQ's `<Question>?`: first letter upper-cased, trailing `?` dropped (the
    /// template supplies it; hub questions have none, hand-written ones may).
    Question,
}

impl Field {
    fn new(role: &str, default_columns: &[&str]) -> Field {
        Field {
            role: role.to_string(),
            default_columns: default_columns.iter().map(|c| c.to_string()).collect(),
            style: FieldStyle::Verbatim,
        }
    }

    fn clean(&self, value: &str) -> String {
        let value = value.trim();
        match self.style {
            FieldStyle::Verbatim => value.to_string(),
            FieldStyle::Question => {
                let value = value.trim_end_matches('?').trim_end();
                let mut chars = value.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => String::new(),
                }
            }
        }
    }
}

/// A classification example in text: the prompt, the candidate continuations and
/// the index of the gold one. `prompt + candidates[i]` is the text scored for `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationText {
    pub prompt: String,
    /// Candidate continuations, including the leading space the template implies.
    pub candidates: Vec<String>,
    pub gold: usize,
}

impl ClassificationText {
    /// The whole text for candidate `index`: prompt followed by the candidate.
    pub fn full_text(&self, index: usize) -> String {
        format!("{}{}", self.prompt, self.candidates[index])
    }
}

/// A language-modelling example in text.
#[derive(Clone, Debug, PartialEq)]
pub struct LmText {
    pub text: String,
}

/// What a task makes of one row.
#[derive(Clone, Debug, PartialEq)]
pub enum TextExample {
    Classification(ClassificationText),
    Lm(LmText),
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Literal(String),
    Field(usize),
}

/// A parsed prompt template: literal text and fields, then the answer slot.
#[derive(Clone, Debug, PartialEq)]
struct Template {
    pieces: Vec<Piece>,
    fields: Vec<Field>,
    /// The template has a space before `{answer}`: it moves onto every candidate.
    space_before_answer: bool,
}

impl Template {
    /// Parses `{field}` placeholders, `{{`/`}}` for literal braces and `\n`, `\t`,
    /// `\\` escapes (so a template can be typed on one command line). `{answer}`
    /// must come last: candidates are scored as the final tokens of the sequence.
    fn parse(text: &str) -> Result<Template> {
        let bad = |msg: String| Error::arg("--template", msg);
        let mut pieces = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        let mut literal = String::new();
        let mut answer_seen = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if answer_seen {
                return Err(bad(format!(
                    "{{{ANSWER_SLOT}}} must end the template (the candidate is scored as the last tokens)"
                )));
            }
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(bad("unmatched `}` (write `}}` for a literal brace)".into())),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) if ch.is_alphanumeric() || ch == '_' => name.push(ch),
                            _ => {
                                return Err(bad(
                                    "`{` must open a placeholder like {text} (write `{{` for a literal brace)"
                                        .into(),
                                ));
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(bad("empty placeholder `{}`".into()));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    if name == ANSWER_SLOT {
                        answer_seen = true;
                        continue;
                    }
                    let index = match fields.iter().position(|f| f.role == name) {
                        Some(i) => i,
                        None => {
                            fields.push(Field::new(&name, &[name.as_str()]));
                            fields.len() - 1
                        }
                    };
                    pieces.push(Piece::Field(index));
                }
                '\\' => match chars.peek() {
                    Some('n') => {
                        chars.next();
                        literal.push('\n');
                    }
                    Some('t') => {
                        chars.next();
                        literal.push('\t');
                    }
                    Some('\\') => {
                        chars.next();
                        literal.push('\\');
                    }
                    _ => literal.push('\\'),
                },
                _ => literal.push(c),
            }
        }
        if !answer_seen {
            return Err(bad(format!(
                "no {{{ANSWER_SLOT}}} slot: end the template with it, e.g. \"{{text}} It was {{{ANSWER_SLOT}}}\""
            )));
        }
        if fields.is_empty() {
            return Err(bad("uses no column: name one like {text}".into()));
        }
        if let Some(Piece::Literal(last)) = pieces.last_mut()
            && last.ends_with(' ')
        {
            last.pop();
            if last.is_empty() {
                pieces.pop();
            }
            return Ok(Template {
                pieces,
                fields,
                space_before_answer: true,
            });
        }
        Ok(Template {
            pieces,
            fields,
            space_before_answer: false,
        })
    }

    fn render(&self, values: &[&str]) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(i) => out.push_str(&self.fields[*i].clean(values[*i])),
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Classification {
    template: Template,
    /// Candidate words in label order (candidate `i` is the answer for label `i`).
    candidates: Vec<String>,
    /// Label texts accepted for candidate `i`, lower case, besides the integer `i`.
    label_names: Vec<Vec<String>>,
    /// Booleans are labels (false = 0, true = 1).
    accepts_bool: bool,
    label_field: Field,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Classification(Classification),
    Lm(Field),
}

/// A task: which columns a row needs and how they become a text example.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    name: String,
    kind: Kind,
}

impl Task {
    /// The task called `name` (one of [`TASK_NAMES`]). `template` and `candidates`
    /// belong to `classification` only, which needs both; the other tasks fix their
    /// prompts and label words to the paper's.
    pub fn new(name: &str, template: Option<&str>, candidates: Option<&[String]>) -> Result<Task> {
        if name != "classification" {
            if template.is_some() {
                return Err(Error::arg(
                    "--template",
                    format!("only with --task classification (task {name} has a fixed prompt)"),
                ));
            }
            if candidates.is_some() {
                return Err(Error::arg(
                    "--candidates",
                    format!("only with --task classification (task {name} has fixed label words)"),
                ));
            }
        }
        let builtin = |template: &str, words: &[&str], names: &[&[&str]], accepts_bool: bool| {
            let template = Template::parse(template);
            let template = template.expect("built-in template"); // invariant: fixed, tested
            Classification {
                template,
                candidates: words.iter().map(|w| w.to_string()).collect(),
                label_names: names
                    .iter()
                    .map(|n| n.iter().map(|s| s.to_string()).collect())
                    .collect(),
                accepts_bool,
                label_field: Field::new("label", &["label"]),
            }
        };
        let kind = match name {
            "sst2" => {
                let mut task = builtin(
                    "{sentence} It was {answer}",
                    &["terrible", "great"],
                    &[&["negative"], &["positive"]],
                    true,
                );
                task.template.fields[0] = Field::new("sentence", &["sentence", "text"]);
                Kind::Classification(task)
            }
            "rte" => {
                let mut task = builtin(
                    "{premise}\\nDoes this mean that \"{hypothesis}\" is true? Yes or No?\\n{answer}",
                    &["Yes", "No"],
                    &[&["entailment"], &["not_entailment"]],
                    false,
                );
                task.template.fields[0] = Field::new("premise", &["premise", "sentence1"]);
                task.template.fields[1] = Field::new("hypothesis", &["hypothesis", "sentence2"]);
                Kind::Classification(task)
            }
            "cb" => Kind::Classification(builtin(
                "Suppose {premise} Can we infer that \"{hypothesis}\"? Yes, No, or Maybe?\\n{answer}",
                &["Yes", "No", "Maybe"],
                &[&["entailment"], &["contradiction"], &["neutral"]],
                false,
            )),
            "boolq" => {
                let mut task = builtin(
                    "{passage} {question}?\\n{answer}",
                    &["No", "Yes"],
                    &[&["false"], &["true"]],
                    true,
                );
                task.template.fields[1].style = FieldStyle::Question;
                task.label_field = Field::new("label", &["label", "answer"]);
                Kind::Classification(task)
            }
            "lm" => Kind::Lm(Field::new("text", &["text", "sentence"])),
            "classification" => Kind::Classification(Self::custom(template, candidates)?),
            _ => {
                return Err(Error::arg(
                    "--task",
                    format!("unknown task `{name}`; known: {}", TASK_NAMES.join(", ")),
                ));
            }
        };
        Ok(Task {
            name: name.to_string(),
            kind,
        })
    }

    fn custom(template: Option<&str>, candidates: Option<&[String]>) -> Result<Classification> {
        let template = template.ok_or_else(|| {
            Error::arg(
                "--template",
                "required by --task classification, e.g. \"{text} It was {answer}\"",
            )
        })?;
        let candidates = candidates.ok_or_else(|| {
            Error::arg(
                "--candidates",
                "required by --task classification, e.g. terrible,great",
            )
        })?;
        let template = Template::parse(template)?;
        let words: Vec<String> = candidates.iter().map(|c| c.trim().to_string()).collect();
        if words.len() < 2 {
            return Err(Error::arg("--candidates", "give at least two answers"));
        }
        if words.iter().any(String::is_empty) {
            return Err(Error::arg("--candidates", "an answer is empty"));
        }
        for (i, word) in words.iter().enumerate() {
            if words[..i].contains(word) {
                return Err(Error::arg(
                    "--candidates",
                    format!("`{word}` is given twice"),
                ));
            }
        }
        if template.fields.iter().any(|f| f.role == "label") {
            return Err(Error::arg(
                "--template",
                "{label} is the gold answer's column, it cannot appear in the prompt",
            ));
        }
        Ok(Classification {
            template,
            label_names: words.iter().map(|w| vec![w.to_lowercase()]).collect(),
            candidates: words,
            accepts_bool: candidates.len() == 2,
            label_field: Field::new("label", &["label"]),
        })
    }

    /// The task's name as given to [`Task::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the task scores candidate answers (as opposed to language modelling).
    pub fn is_classification(&self) -> bool {
        matches!(self.kind, Kind::Classification(_))
    }

    /// The text fields a row must provide, in the order [`Task::render`] takes them.
    pub fn text_fields(&self) -> &[Field] {
        match &self.kind {
            Kind::Classification(c) => &c.template.fields,
            Kind::Lm(field) => std::slice::from_ref(field),
        }
    }

    /// The label field (classification only).
    pub fn label_field(&self) -> Option<&Field> {
        match &self.kind {
            Kind::Classification(c) => Some(&c.label_field),
            Kind::Lm(_) => None,
        }
    }

    /// The candidate answer words in label order (classification only).
    pub fn candidates(&self) -> Option<&[String]> {
        match &self.kind {
            Kind::Classification(c) => Some(&c.candidates),
            Kind::Lm(_) => None,
        }
    }

    /// Turns one row into a text example. `values` are the row's text fields in the
    /// order of [`Task::text_fields`]; `label` is its label cell (classification).
    /// The error message names the problem but not the row: the caller adds that.
    pub fn render(
        &self,
        values: &[&str],
        label: Option<&LabelValue>,
    ) -> std::result::Result<TextExample, String> {
        match &self.kind {
            Kind::Lm(field) => Ok(TextExample::Lm(LmText {
                text: field.clean(values[0]),
            })),
            Kind::Classification(c) => {
                let label = label.ok_or("label is missing (null)")?;
                let gold = self.gold_index(c, label)?;
                let space = if c.template.space_before_answer {
                    " "
                } else {
                    ""
                };
                Ok(TextExample::Classification(ClassificationText {
                    prompt: c.template.render(values),
                    candidates: c.candidates.iter().map(|w| format!("{space}{w}")).collect(),
                    gold,
                }))
            }
        }
    }

    /// Maps a label cell to a candidate index: an integer class id, a boolean (tasks
    /// with a yes/no or negative/positive reading), or a class name or candidate word
    /// (case-insensitive).
    fn gold_index(
        &self,
        c: &Classification,
        label: &LabelValue,
    ) -> std::result::Result<usize, String> {
        let count = c.candidates.len();
        let index = match label {
            LabelValue::Int(id) => Some(*id),
            LabelValue::Bool(b) if c.accepts_bool => Some(i64::from(*b)),
            LabelValue::Bool(_) => None,
            LabelValue::Text(text) => {
                let text = text.trim();
                let lower = text.to_lowercase();
                text.parse::<i64>().ok().or_else(|| {
                    (0..count)
                        .find(|&i| {
                            c.candidates[i].to_lowercase() == lower
                                || c.label_names[i].contains(&lower)
                        })
                        .map(|i| i as i64)
                })
            }
        };
        match index {
            Some(i) if (0..count as i64).contains(&i) => Ok(i as usize),
            _ => {
                let classes: Vec<String> = (0..count)
                    .map(|i| {
                        let mut names = vec![c.candidates[i].clone()];
                        names.extend(
                            c.label_names[i]
                                .iter()
                                .filter(|n| **n != c.candidates[i].to_lowercase())
                                .cloned(),
                        );
                        format!("{i} = {}", names.join("/"))
                    })
                    .collect();
                let hint = if *label == LabelValue::Int(-1) {
                    "; -1 marks the unlabeled test split of GLUE/SuperGLUE"
                } else {
                    ""
                };
                Err(format!(
                    "label {label} is not one of the candidates of task {} ({}){hint}",
                    self.name,
                    classes.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestResult;

    fn classify(task: &Task, values: &[&str], label: LabelValue) -> TestResult<ClassificationText> {
        match task.render(values, Some(&label))? {
            TextExample::Classification(c) => Ok(c),
            TextExample::Lm(_) => Err("expected a classification example".into()),
        }
    }

    #[test]
    fn every_built_in_task_builds() -> TestResult {
        // Their templates are fixed strings, parsed (with an `expect`) on construction.
        for name in TASK_NAMES.iter().filter(|&&n| n != "classification") {
            Task::new(name, None, None)?;
        }
        Ok(())
    }

    #[test]
    fn sst2_prompt_moves_the_space_onto_the_candidates() -> TestResult {
        let task = Task::new("sst2", None, None)?;
        let ex = classify(&task, &["A warm, funny film. "], LabelValue::Int(1))?;
        assert_eq!(ex.prompt, "A warm, funny film. It was");
        assert_eq!(ex.candidates, vec![" terrible", " great"]);
        assert_eq!(ex.gold, 1);
        assert_eq!(ex.full_text(1), "A warm, funny film. It was great");
        Ok(())
    }

    #[test]
    fn boolq_capitalises_the_question_and_adds_one_question_mark() -> TestResult {
        let task = Task::new("boolq", None, None)?;
        let fields: Vec<&str> = task.text_fields().iter().map(|f| f.role.as_str()).collect();
        assert_eq!(fields, ["passage", "question"]);
        for question in ["is the sky blue", "is the sky blue?"] {
            let ex = classify(
                &task,
                &["The sky is blue.", question],
                LabelValue::Bool(true),
            )?;
            assert_eq!(ex.prompt, "The sky is blue. Is the sky blue?\n");
            assert_eq!(ex.candidates, vec!["No", "Yes"]);
            assert_eq!(ex.gold, 1);
        }
        Ok(())
    }

    #[test]
    fn labels_by_id_name_word_and_boolean() -> TestResult {
        let task = Task::new("cb", None, None)?;
        let v = &["p", "h"];
        assert_eq!(classify(&task, v, LabelValue::Int(2))?.gold, 2);
        assert_eq!(
            classify(&task, v, LabelValue::Text("Contradiction".into()))?.gold,
            1
        );
        assert_eq!(
            classify(&task, v, LabelValue::Text("maybe".into()))?.gold,
            2
        );
        assert_eq!(classify(&task, v, LabelValue::Text(" 0 ".into()))?.gold, 0);
        let err = task.render(v, Some(&LabelValue::Bool(true))).unwrap_err();
        assert!(
            err.contains("label true is not one of the candidates of task cb"),
            "{err}"
        );
        let sst2 = Task::new("sst2", None, None)?;
        assert_eq!(classify(&sst2, &["x"], LabelValue::Bool(false))?.gold, 0);
        Ok(())
    }

    #[test]
    fn out_of_range_labels_list_the_classes() -> TestResult {
        let task = Task::new("sst2", None, None)?;
        let err = task.render(&["x"], Some(&LabelValue::Int(-1))).unwrap_err();
        assert_eq!(
            err,
            "label -1 is not one of the candidates of task sst2 (0 = terrible/negative, \
             1 = great/positive); -1 marks the unlabeled test split of GLUE/SuperGLUE"
        );
        let err = task
            .render(&["x"], Some(&LabelValue::Text("meh".into())))
            .unwrap_err();
        assert!(err.starts_with("label \"meh\" is not one"), "{err}");
        assert_eq!(
            task.render(&["x"], None).unwrap_err(),
            "label is missing (null)"
        );
        Ok(())
    }

    #[test]
    fn custom_templates_parse_escapes_and_reuse_fields() -> TestResult {
        let candidates = vec!["no".to_string(), " yes ".to_string()];
        let task = Task::new(
            "classification",
            Some("Q: {q} {{really}}\\n{q}\\t{answer}"),
            Some(&candidates),
        )?;
        assert_eq!(task.text_fields().len(), 1);
        let ex = classify(&task, &["why"], LabelValue::Text("YES".into()))?;
        assert_eq!(ex.prompt, "Q: why {really}\nwhy\t");
        assert_eq!(ex.candidates, vec!["no", "yes"]);
        assert_eq!(ex.gold, 1);
        Ok(())
    }

    #[test]
    fn bad_templates_and_candidates_are_refused() -> TestResult {
        let two = vec!["a".to_string(), "b".to_string()];
        let one = vec!["a".to_string()];
        let twice = vec!["a".to_string(), "a".to_string()];
        for (template, candidates, expected) in [
            ("{text} It was", &two, "no {answer} slot"),
            ("{text} {answer} .", &two, "must end the template"),
            ("It was {answer}", &two, "uses no column"),
            ("{text {answer}", &two, "must open a placeholder"),
            ("{text} } {answer}", &two, "unmatched `}`"),
            ("{text} {answer}", &one, "at least two"),
            ("{text} {answer}", &twice, "`a` is given twice"),
        ] {
            let err = Task::new("classification", Some(template), Some(candidates))
                .err()
                .ok_or("a bad template was accepted")?
                .to_string();
            assert!(err.contains(expected), "{template}: {err}");
        }
        Ok(())
    }

    #[test]
    fn unknown_task_and_misplaced_flags() -> TestResult {
        let err = Task::new("mnli", None, None)
            .err()
            .ok_or("task mnli was accepted")?
            .to_string();
        assert_eq!(
            err,
            "--task: unknown task `mnli`; known: sst2, rte, cb, boolq, lm, classification"
        );
        let err = Task::new("sst2", Some("{x} {answer}"), None)
            .err()
            .ok_or("--template was accepted for sst2")?
            .to_string();
        assert!(
            err.starts_with("--template: only with --task classification"),
            "{err}"
        );
        let err = Task::new("classification", None, None)
            .err()
            .ok_or("classification without --template was accepted")?
            .to_string();
        assert!(err.starts_with("--template: required"), "{err}");
        Ok(())
    }

    #[test]
    fn lm_text_is_trimmed() -> TestResult {
        let task = Task::new("lm", None, None)?;
        assert!(!task.is_classification());
        assert_eq!(
            task.render(&[" = Valkyria Chronicles = \n"], None)?,
            TextExample::Lm(LmText {
                text: "= Valkyria Chronicles =".into()
            })
        );
        Ok(())
    }
}
